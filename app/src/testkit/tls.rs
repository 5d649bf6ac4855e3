//! A certificate authority of the test's own, for TLS end to end.

use std::path::{Path, PathBuf};

/// A CA made for one test, and a certificate it signed for `localhost`
/// and `127.0.0.1` with its key, as PEM files in a temporary directory
/// (removed when dropped): serve with [`TestCa::serve_flags`], trust
/// [`TestCa::ca_file`] in the clients.
///
/// ```no_run
/// # use annals::testkit::TestCa;
/// let ca = TestCa::new();
/// // In a service's own test: `env!("CARGO_BIN_EXE_<name>")`.
/// let server = std::process::Command::new("target/release/my-service")
///     .args(["serve", "--listen", "127.0.0.1:0"])
///     .args(ca.serve_flags())
///     .spawn();
/// let tls = http_edge::tls::client_config(Some(&ca.ca_file())).expect("the CA is readable");
/// let client = reqwest::Client::builder().tls_backend_preconfigured(tls).build();
/// ```
#[derive(Debug)]
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = tempfile::tempdir()
            .unwrap_or_else(|e| panic!("creating a directory for the test CA: {e}"));
        let key_pair = || KeyPair::generate().unwrap_or_else(|e| panic!("generating a key: {e}"));
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("the CA's parameters: {e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, key_pair())
            .unwrap_or_else(|e| panic!("signing the CA: {e}"));
        let key = key_pair();
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .and_then(|params| params.signed_by(&key, &issuer))
            .unwrap_or_else(|e| panic!("signing the server certificate: {e}"));
        let ca = TestCa { dir };
        for (path, pem) in [
            (ca.ca_file(), issuer.pem()),
            (ca.cert_file(), cert.pem()),
            (ca.key_file(), key.serialize_pem()),
        ] {
            std::fs::write(&path, pem)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        ca
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA's certificate: what a client trusts.
    pub fn ca_file(&self) -> PathBuf {
        self.file("ca.pem")
    }

    /// The server's certificate, signed by the CA.
    pub fn cert_file(&self) -> PathBuf {
        self.file("cert.pem")
    }

    /// The server certificate's private key.
    pub fn key_file(&self) -> PathBuf {
        self.file("key.pem")
    }

    /// `--tls-cert <cert> --tls-key <key>`: the flags that make an
    /// annals process serve TLS with this CA's certificate.
    pub fn serve_flags(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--tls-cert".into(),
            path(&self.cert_file()),
            "--tls-key".into(),
            path(&self.key_file()),
        ]
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
