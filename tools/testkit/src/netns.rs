//! Several hosts on one machine: network namespaces joined by a bridge, the way
//! DESIGN.md's multi-host rig describes. Each host has its own address and its own
//! link; the test cuts a host off (`ip link set … down` on its link) and brings it
//! back. The machine itself is on the bridge too, so daemons started outside the
//! namespaces (workers, `xtsyncctl`) reach every host. Needs root and `ip`.

use std::process::Command;

/// A bridge and `n` namespaces on it, removed however the test ends.
pub struct Lan {
    bridge: String,
    /// 10.233.`subnet`.0/24: the machine is .1, host `i` is .(10 + i).
    subnet: u32,
    hosts: Vec<Host>,
}

/// One namespace and the machine-side end of its link.
pub struct Host {
    pub ns: String,
    pub ip: String,
    link: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Lan {
    /// `n` hosts named `xt{tag}{subnet}-{i}`; the subnet comes from the process id so
    /// that tests running in parallel do not share one.
    pub fn new(tag: &str, n: usize) -> Lan {
        let subnet = std::process::id() % 200 + 20;
        let bridge = format!("xt{tag}{subnet}");
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("10.233.{subnet}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let mut lan = Lan { bridge, subnet, hosts: Vec::new() };
        for i in 0..n {
            let ns = format!("xt{tag}{subnet}-{i}");
            let (link, inner) = (format!("xt{tag}{subnet}h{i}"), format!("xt{tag}{subnet}n{i}"));
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            let _ = Command::new("ip").args(["link", "del", &link]).output();
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &link, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &link, "master", &lan.bridge]);
            ip(&["link", "set", &link, "up"]);
            let host_ip = format!("10.233.{subnet}.{}", 10 + i);
            ip(&["-n", &ns, "addr", "add", &format!("{host_ip}/24"), "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            lan.hosts.push(Host { ns, ip: host_ip, link });
        }
        lan
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// The machine's own address on the bridge.
    pub fn machine_ip(&self) -> String {
        format!("10.233.{}.1", self.subnet)
    }

    /// Cuts host `i` off from every other host and the machine, or reconnects it.
    pub fn set_link(&self, i: usize, up: bool) {
        ip(&["link", "set", &self.hosts[i].link, if up { "up" } else { "down" }]);
    }

    /// `program` to run inside host `i`'s namespace.
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i].ns]).arg(program);
        c
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = Command::new("ip").args(["link", "del", &h.link]).output();
            let _ = Command::new("ip").args(["netns", "del", &h.ns]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}
