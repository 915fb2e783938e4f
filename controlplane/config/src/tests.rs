use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Some(Path::new("/etc/xtsync/xtsync.yaml")))
}

#[test]
fn empty_file_gives_embedded_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.transfer.chunk_bytes_avg, 64 * 1024);
    assert_eq!(c.coordinators.len(), 1);
    assert_eq!(c.networking.data_listen.port(), 7401);
}

#[test]
fn guide_example_parses() {
    let c = parse(
        "coordinators:\n  - host: coordinator1.example.com\n  - host: coordinator2.example.com\n  - host: coordinator3.example.com\n\
         storage:\n  data_path: /var/lib/xtsync/data\n  metadata_path: /var/lib/xtsync/meta\n  retention_days: 30\n\
         transfer:\n  max_concurrent_transfers: 128\n  chunk_size_kb: 1024\n  retry_count: 5\n",
    )
    .unwrap();
    assert_eq!(c.coordinators[2].api_addr, "coordinator3.example.com:7400");
    assert_eq!(c.chunk_bytes(), (256 * 1024, 1024 * 1024, 4 * 1024 * 1024));
}

#[test]
fn unknown_key_names_file_and_line() {
    let err = parse("transfer:\n  chunk_size_kb: 64\n  chunk_sise: 3\n").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("/etc/xtsync/xtsync.yaml:3:"), "{text}");
    assert!(text.contains("chunk_sise"), "{text}");
}

#[test]
fn wrong_type_names_line() {
    let err = parse("transfer:\n  retry_count: many\n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { line: 2, .. }), "{err}");
}

#[test]
fn out_of_range_value_names_key() {
    let err = parse("transfer:\n  chunk_size_kb: 3\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/xtsync/xtsync.yaml: key `transfer.chunk_size_kb`: 3 is out of range: expected 4..=4096"
    );
}

#[test]
fn admit_worker_sessions_is_parsed_and_checked() {
    assert_eq!(parse("").unwrap().networking.admit_worker_sessions, AdmitWorkerSessions::Job);
    let any = parse("networking:\n  admit_worker_sessions: any\n").unwrap();
    assert_eq!(any.networking.admit_worker_sessions, AdmitWorkerSessions::Any);
    let err = parse("networking:\n  admit_worker_sessions: all\n").unwrap_err().to_string();
    assert!(err.contains("networking.admit_worker_sessions") && err.contains("job, any"), "{err}");
}

#[test]
fn small_batch_sync_is_parsed_and_checked() {
    assert_eq!(parse("").unwrap().transfer.small_batch_sync, SmallBatchSync::Filesystem);
    let per_file = parse("transfer:\n  small_batch_sync: per_file\n").unwrap();
    assert_eq!(per_file.transfer.small_batch_sync, SmallBatchSync::PerFile);
    let err = parse("transfer:\n  small_batch_sync: always\n").unwrap_err().to_string();
    assert!(err.contains("transfer.small_batch_sync") && err.contains("filesystem, per_file"), "{err}");
}

#[test]
fn ktls_mode_is_parsed_and_checked() {
    assert_eq!(parse("").unwrap().transfer.ktls, KtlsMode::Auto);
    assert_eq!(parse("transfer:\n  ktls: off\n").unwrap().transfer.ktls, KtlsMode::Off);
    let err = parse("transfer:\n  ktls: yes\n").unwrap_err().to_string();
    assert!(err.contains("transfer.ktls") && err.contains("auto, on, off"), "{err}");
}

#[test]
fn bad_compression_and_relative_path_are_refused() {
    let err = parse("transfer:\n  compression: lz5\n").unwrap_err();
    assert!(err.to_string().contains("transfer.compression"), "{err}");
    let err = parse("storage:\n  data_path: data\n").unwrap_err();
    assert!(err.to_string().contains("must be an absolute path"), "{err}");
}

#[test]
fn even_coordinator_count_is_refused() {
    let err = parse("coordinators:\n  - host: a\n  - host: b\n").unwrap_err();
    assert!(err.to_string().contains("use 1, 3 or 5"), "{err}");
}

#[test]
fn tls_needs_all_three_files() {
    let err = parse("networking:\n  tls:\n    cert: /a.crt\n").unwrap_err();
    assert!(err.to_string().contains("networking.tls.key"), "{err}");
}

#[test]
fn tls_crl_is_optional_and_must_be_absolute() {
    let base = "networking:\n  tls:\n    cert: /a.crt\n    key: /a.key\n    ca: /ca.crt\n";
    let c = parse(base).unwrap();
    assert_eq!(c.networking.tls.unwrap().crl_path, None);
    let c = parse(&format!("{base}    crl: /ca.crl\n")).unwrap();
    assert_eq!(c.networking.tls.unwrap().crl_path, Some(std::path::PathBuf::from("/ca.crl")));
    let err = parse(&format!("{base}    crl: ca.crl\n")).unwrap_err().to_string();
    assert!(err.contains("networking.tls.crl") && err.contains("absolute"), "{err}");
}

#[test]
fn shipped_tuning_profiles_are_valid() {
    for (name, text) in
        [("lan.yaml", include_str!("../../../tuning/lan.yaml")), ("wan.yaml", include_str!("../../../tuning/wan.yaml"))]
    {
        Config::parse(text, Some(Path::new(name))).unwrap_or_else(|e| panic!("{e}"));
    }
}
