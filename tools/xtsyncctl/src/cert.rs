//! `xtsyncctl cert`: the cluster's certificate authority on this machine (see
//! `xtsync_transport::pki`): init-ca, issue, list, revoke.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use xtsync_transport::pki::{CertState, CERT_DAYS_DEFAULT};
use xtsync_transport::{CertAuthority, IssueRequest, Role};

use crate::output::table;

/// Where the CA lives unless `--dir` or `XTSYNC_PKI_DIR` says otherwise.
pub const PKI_DIR_DEFAULT: &str = "/etc/xtsync/pki";
/// Longest validity `--days` accepts (the CA itself lives 10 years).
const DAYS_MAX: u32 = 3650;

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Create the cluster CA (ca.crt, ca.key, an empty CRL ca.crl, index.json) in DIR.
    InitCa {
        #[arg(long, env = "XTSYNC_PKI_DIR", default_value = PKI_DIR_DEFAULT)]
        dir: PathBuf,
        /// Cluster name, written in the CA's subject.
        #[arg(long, default_value = "xtsync")]
        name: String,
    },
    /// Issue NAME.crt and NAME.key for one component, signed by the CA in DIR.
    Issue {
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The component's name: a worker's `worker.name`, a coordinator's host, an
        /// operator's or agent's login.
        #[arg(long)]
        name: String,
        /// Extra subject alternative name (DNS name or IP address peers dial); repeat
        /// for several. The name itself, localhost and 127.0.0.1 are always included.
        #[arg(long = "san")]
        sans: Vec<String>,
        #[arg(long, default_value_t = CERT_DAYS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=DAYS_MAX as i64))]
        days: u32,
        #[arg(long, env = "XTSYNC_PKI_DIR", default_value = PKI_DIR_DEFAULT)]
        dir: PathBuf,
    },
    /// Every certificate the CA issued: name, role, serial, expiry, revoked or not.
    List {
        #[arg(long, env = "XTSYNC_PKI_DIR", default_value = PKI_DIR_DEFAULT)]
        dir: PathBuf,
    },
    /// Revoke a certificate (by serial) or every certificate of a name, and sign a new
    /// CRL. Daemons reading the CRL file refuse the certificate within 2 s.
    Revoke {
        /// A certificate name, or a serial as `cert list` prints it.
        name_or_serial: String,
        #[arg(long, env = "XTSYNC_PKI_DIR", default_value = PKI_DIR_DEFAULT)]
        dir: PathBuf,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse::<Role>().map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct ListedCert {
    name: String,
    role: Role,
    serial: String,
    not_before: String,
    not_after: String,
    state: CertState,
    revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
}

/// `2026-05-01 12:00:00Z`, without pulling in a formatting library.
fn utc(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}

pub fn run(cmd: CertCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        CertCommand::InitCa { dir, name } => {
            let ca = CertAuthority::init(&dir, &name)?;
            let files = ca.ca_files();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ca": files.cert_path, "key": files.key_path, "crl": files.crl_path})
                );
            } else {
                println!("certificate authority {name:?} created in {}", dir.display());
                println!("  {}  (give to every component as networking.tls.ca)", files.cert_path.display());
                println!("  {}  (keep secret; never leaves this machine)", files.key_path.display());
                println!("  {}  (give to every component as networking.tls.crl)", files.crl_path.display());
            }
        }
        CertCommand::Issue { role, name, sans, days, dir } => {
            let ca = CertAuthority::open(&dir)?;
            let mut req = IssueRequest::for_days(&name, role, days);
            req.sans = sans;
            let issued = ca.issue(&req)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "name": issued.cert.name, "role": issued.cert.role, "serial": issued.cert.serial,
                        "not_after": utc(issued.cert.not_after_unix), "cert": issued.files.cert_path,
                        "key": issued.files.key_path, "still_valid": issued.still_valid,
                    })
                );
            } else {
                println!(
                    "issued {} (role {role}, serial {}, valid until {})",
                    issued.cert.name,
                    issued.cert.serial,
                    utc(issued.cert.not_after_unix)
                );
                println!("  {}", issued.files.cert_path.display());
                println!("  {}  (private key)", issued.files.key_path.display());
                for serial in &issued.still_valid {
                    println!(
                        "note: the earlier certificate {serial} of {name} stays valid until revoked: xtsyncctl cert revoke {serial}"
                    );
                }
            }
        }
        CertCommand::List { dir } => {
            let index = CertAuthority::open(&dir)?.index().context("reading the certificate index")?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let listed: Vec<ListedCert> = index
                .certs
                .iter()
                .map(|c| ListedCert {
                    name: c.name.clone(),
                    role: c.role,
                    serial: c.serial.clone(),
                    not_before: utc(c.not_before_unix),
                    not_after: utc(c.not_after_unix),
                    state: c.state(now),
                    revoked: c.revoked_unix.is_some(),
                    revoked_at: c.revoked_unix.map(utc),
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string(&listed)?);
            } else {
                let rows: Vec<Vec<String>> = listed
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            c.role.to_string(),
                            c.serial.clone(),
                            c.not_after.clone(),
                            c.state.as_str().to_string(),
                        ]
                    })
                    .collect();
                table(&["name", "role", "serial", "not after", "state"], &rows);
            }
        }
        CertCommand::Revoke { name_or_serial, dir } => {
            let ca = CertAuthority::open(&dir)?;
            let revoked = ca.revoke(&name_or_serial)?;
            if json {
                let serials: Vec<&str> = revoked.iter().map(|c| c.serial.as_str()).collect();
                println!("{}", serde_json::json!({"revoked": serials, "crl": ca.ca_files().crl_path}));
            } else {
                for c in &revoked {
                    println!("revoked {} (role {}, serial {})", c.name, c.role, c.serial);
                }
                println!(
                    "new CRL: {} — daemons reading it refuse these certificates within 2 s; copy it to every host that has its own copy",
                    ca.ca_files().crl_path.display()
                );
            }
        }
    }
    Ok(())
}
