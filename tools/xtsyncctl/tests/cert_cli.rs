//! `xtsyncctl cert` as an operator runs it: init-ca, issue, list, revoke, and the
//! refusals an operator can act on.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn xtsyncctl(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtsyncctl"))
        .current_dir(cwd)
        .env_remove("XTSYNC_PKI_DIR")
        .args(args)
        .output()
        .expect("run xtsyncctl")
}

fn ok(cwd: &Path, args: &[&str]) -> String {
    let out = xtsyncctl(cwd, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(cwd: &Path, args: &[&str]) -> String {
    let out = xtsyncctl(cwd, args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn init_issue_list_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let d = dir.to_str().unwrap();
    let cwd = tmp.path();

    let err = fails(cwd, &["cert", "list", "--dir", d]);
    assert!(err.contains("xtsyncctl cert init-ca"), "{err}");
    ok(cwd, &["cert", "init-ca", "--dir", d, "--name", "lab"]);
    assert!(fails(cwd, &["cert", "init-ca", "--dir", d]).contains("already holds a certificate authority"));
    assert_eq!(std::fs::metadata(dir.join("ca.key")).unwrap().permissions().mode() & 0o777, 0o600);

    let issued: serde_json::Value = serde_json::from_str(&ok(
        cwd,
        &[
            "--json", "cert", "issue", "--role", "worker", "--name", "dc1-a", "--san", "10.1.2.3", "--days", "30",
            "--dir", d,
        ],
    ))
    .unwrap();
    assert_eq!(issued["role"], "worker");
    assert_eq!(std::fs::metadata(dir.join("dc1-a.key")).unwrap().permissions().mode() & 0o777, 0o600);
    let err = fails(cwd, &["cert", "issue", "--role", "root", "--name", "x", "--dir", d]);
    assert!(err.contains("expected coordinator, worker, agent or admin"), "{err}");
    let err = fails(cwd, &["cert", "issue", "--role", "admin", "--name", "../x", "--dir", d]);
    assert!(err.contains("invalid certificate name"), "{err}");
    ok(cwd, &["cert", "issue", "--role", "admin", "--name", "ops", "--dir", d]);

    let list: serde_json::Value = serde_json::from_str(&ok(cwd, &["cert", "list", "--json", "--dir", d])).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!((list[0]["name"].as_str(), list[0]["state"].as_str()), (Some("dc1-a"), Some("valid")));
    assert_eq!(list[0]["serial"], issued["serial"]);

    let crl_before = std::fs::read(dir.join("ca.crl")).unwrap();
    let out = ok(cwd, &["cert", "revoke", "dc1-a", "--dir", d]);
    assert!(out.contains("revoked dc1-a"), "{out}");
    assert_ne!(std::fs::read(dir.join("ca.crl")).unwrap(), crl_before, "a new CRL is signed");
    assert!(fails(cwd, &["cert", "revoke", "dc1-a", "--dir", d]).contains("already revoked"));
    assert!(fails(cwd, &["cert", "revoke", "nobody", "--dir", d]).contains("no certificate named"));
    let table = ok(cwd, &["cert", "list", "--dir", d]);
    let row = table.lines().find(|l| l.starts_with("dc1-a")).unwrap();
    assert!(row.contains("revoked") && row.contains(issued["serial"].as_str().unwrap()), "{table}");
}

#[test]
fn commands_that_need_the_coordinator_say_where_the_certificate_is_looked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("no-pki");
    let err = fails(tmp.path(), &["--pki-dir", empty.to_str().unwrap(), "status"]);
    assert!(err.contains("no client certificate") && err.contains("no-pki"), "{err}");
    let err = fails(tmp.path(), &["--cert", "/x.crt", "status"]);
    assert!(err.contains("--cert, --key and --ca go together"), "{err}");
}
