//! Unit tests of the `[tls]` section.
use super::*;

const BASE: &str = include_str!("testdata/base.toml");

/// A directory with a self-signed certificate for "localhost" (`server.crt`, `server.key`)
/// and a map file path inside it.
fn files() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    std::fs::write(dir.path().join("server.crt"), cert.pem()).expect("write cert");
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("write key");
    std::fs::write(dir.path().join("garbage.pem"), "not a PEM file\n").expect("write");
    let origin = dir.path().join("shardmap.toml").display().to_string();
    (dir, origin)
}

fn with_tls(section: &str) -> String {
    format!("{BASE}\n[tls]\n{section}")
}

/// The (line, message) of the error `[tls] section` must produce.
fn tls_err(section: &str, origin: &str) -> (usize, String) {
    let text = with_tls(section);
    match parse(&text, origin) {
        Err(ConfigError::Invalid { line, message, .. }) => (line, message),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

/// 1-based line of the first line of `[tls]` section text that contains `needle`.
fn line_of(section: &str, needle: &str) -> usize {
    let text = with_tls(section);
    text.lines()
        .position(|l| l.contains(needle) && !BASE.contains(l))
        .expect("needle in section")
        + 1
}

#[test]
fn no_section_means_plain_everywhere() {
    let c = parse(BASE, "test.toml").expect("base map");
    assert!(c.tls.acceptor.is_none());
    assert!(!c.tls.require_tls);
    assert_eq!(c.tls.backend.mode(), "disable");
    assert!(c.shards.iter().all(|s| s.tls.mode() == "disable"));
}

#[test]
fn cert_and_key_load_relative_to_the_map_file() {
    let (dir, origin) = files();
    let c = parse(
        &with_tls("cert = \"server.crt\"\nkey = \"server.key\"\nrequire_tls = true\n"),
        &origin,
    )
    .expect("valid [tls]");
    assert!(c.tls.acceptor.is_some());
    assert!(c.tls.require_tls);
    let (cert, key) = c.tls.cert_files.expect("files");
    assert_eq!(cert, dir.path().join("server.crt"));
    assert_eq!(key, dir.path().join("server.key"));
}

#[test]
fn missing_certificate_file_names_line_and_file() {
    let (_dir, origin) = files();
    let section = "cert = \"nope.crt\"\nkey = \"server.key\"\n";
    let (line, message) = tls_err(section, &origin);
    assert_eq!(line, line_of(section, "nope.crt"));
    assert!(message.contains("nope.crt"), "{message}");
}

#[test]
fn bad_key_is_an_error_not_a_panic() {
    let (_dir, origin) = files();
    let (_, message) = tls_err("cert = \"server.crt\"\nkey = \"garbage.pem\"\n", &origin);
    assert!(message.contains("garbage.pem"), "{message}");
    // a certificate file given as the key
    let (_, message) = tls_err("cert = \"server.crt\"\nkey = \"server.crt\"\n", &origin);
    assert!(message.contains("private key"), "{message}");
    let (_, message) = tls_err("cert = \"garbage.pem\"\nkey = \"server.key\"\n", &origin);
    assert!(message.contains("no certificate"), "{message}");
}

#[test]
fn cert_without_key_is_refused() {
    let (_dir, origin) = files();
    let (_, message) = tls_err("cert = \"server.crt\"\n", &origin);
    assert!(message.contains("both cert and key"), "{message}");
}

#[test]
fn require_tls_needs_a_certificate() {
    let section = "require_tls = true\n";
    let (line, message) = tls_err(section, "test.toml");
    assert_eq!(line, line_of(section, "require_tls"));
    assert!(message.contains("needs cert and key"), "{message}");
}

#[test]
fn backend_modes() {
    let (_dir, origin) = files();
    let section = "backend = \"verify-ca\"\n";
    let (line, message) = tls_err(section, &origin);
    assert_eq!(line, line_of(section, "verify-ca"));
    assert!(message.contains("not a mode"), "{message}");

    let (_, message) = tls_err("backend = \"verify-full\"\n", &origin);
    assert!(message.contains("needs backend_ca"), "{message}");

    let section = "backend = \"verify-full\"\nbackend_ca = \"garbage.pem\"\n";
    let (line, message) = tls_err(section, &origin);
    assert_eq!(line, line_of(section, "garbage.pem"));
    assert!(message.contains("garbage.pem"), "{message}");

    let c = parse(
        &with_tls("backend = \"verify-full\"\nbackend_ca = \"server.crt\"\n"),
        &origin,
    )
    .expect("verify-full with a CA");
    assert!(c.shards.iter().all(|s| s.tls.mode() == "verify-full"));
    let c = parse(&with_tls("backend = \"require\"\n"), &origin).expect("require");
    assert!(c.shards.iter().all(|s| s.tls.mode() == "require"));
}
