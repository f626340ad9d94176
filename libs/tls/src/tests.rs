//! Handshakes over an in-memory pipe, with certificates made for each test.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA, and what it signs, as PEM files in a temporary folder.
struct Ca {
    dir: tempfile::TempDir,
    cert: rcgen::Certificate,
    key: KeyPair,
    name: &'static str,
}

impl Ca {
    fn new(name: &'static str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
        Ca {
            dir,
            cert,
            key,
            name,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join(format!("{}.pem", self.name))
    }

    /// A certificate for `names` signed by this CA: (cert file, key file).
    fn issue(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        let cert_file = self.dir.path().join(format!("{file}.crt"));
        let key_file = self.dir.path().join(format!("{file}.key"));
        fs::write(&cert_file, cert.pem()).unwrap();
        fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }

    fn server(&self, names: &[&str]) -> ServerTls {
        let (cert_file, key_file) = self.issue("server", names);
        ServerTls {
            cert_file,
            key_file,
            client_ca_file: None,
        }
    }
}

/// Both ends of one handshake over a pipe, and a line each way when it
/// works: each side's error as text, the client's first.
async fn handshake(server: &ServerTls, client: &ClientTls, name: &str) -> Result<(), String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = server.acceptor().unwrap();
    let connector = client.connector().unwrap();
    let name = server_name(name).unwrap();
    let serve = tokio::spawn(async move {
        let mut tls = acceptor
            .accept(a)
            .await
            .map_err(|e| format!("server: {}", Reason(&e)))?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf)
            .await
            .map_err(|e| format!("server: {}", Reason(&e)))?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    });
    let dial = async {
        let mut tls = connector
            .connect(name, b)
            .await
            .map_err(|e| format!("client: {}", Reason(&e)))?;
        tls.write_all(b"hello")
            .await
            .map_err(|e| format!("client: {}", Reason(&e)))?;
        let mut echo = [0u8; 5];
        tls.read_exact(&mut echo)
            .await
            .map_err(|e| format!("client: {}", Reason(&e)))?;
        assert_eq!(&echo, b"hello");
        Ok::<_, String>(())
    };
    let dialled = dial.await;
    let served = serve.await.unwrap();
    match (dialled, served) {
        (Ok(()), Ok(())) => Ok(()),
        (d, s) => Err(format!(
            "{}; {}",
            d.err().unwrap_or_default(),
            s.err().unwrap_or_default()
        )),
    }
}

#[tokio::test]
async fn a_trusted_certificate_for_the_name_dialled() {
    let ca = Ca::new("test-ca");
    let server = ca.server(&["localhost", "127.0.0.1"]);
    let client = ClientTls {
        ca_file: Some(ca.ca_file()),
        ..ClientTls::default()
    };
    handshake(&server, &client, "localhost").await.unwrap();
    handshake(&server, &client, "127.0.0.1").await.unwrap();
    handshake(&server, &client, "[127.0.0.1]").await.unwrap();
}

#[tokio::test]
async fn another_ca_or_another_name_is_refused_with_the_reason() {
    let ca = Ca::new("test-ca");
    let stranger = Ca::new("stranger-ca");
    let server = stranger.server(&["localhost"]);
    let client = ClientTls {
        ca_file: Some(ca.ca_file()),
        ..ClientTls::default()
    };
    let err = handshake(&server, &client, "localhost").await.unwrap_err();
    assert!(
        err.contains("client: invalid peer certificate: UnknownIssuer"),
        "{err}"
    );

    let server = ca.server(&["mx.example.org"]);
    let err = handshake(&server, &client, "localhost").await.unwrap_err();
    assert!(err.starts_with("client: invalid peer certificate"), "{err}");
    assert!(err.contains("mx.example.org"), "names what it holds: {err}");
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_the_ca_signed() {
    let ca = Ca::new("test-ca");
    let mut server = ca.server(&["localhost"]);
    server.client_ca_file = Some(ca.ca_file());
    let anonymous = ClientTls {
        ca_file: Some(ca.ca_file()),
        ..ClientTls::default()
    };
    let err = handshake(&server, &anonymous, "localhost")
        .await
        .unwrap_err();
    assert!(err.contains("server: peer sent no certificates"), "{err}");

    let (cert_file, key_file) = ca.issue("client", &["fleet-member-1"]);
    let member = ClientTls {
        ca_file: Some(ca.ca_file()),
        cert_file: Some(cert_file),
        key_file: Some(key_file),
    };
    handshake(&server, &member, "localhost").await.unwrap();

    let stranger = Ca::new("stranger-ca");
    let (cert_file, key_file) = stranger.issue("client", &["intruder"]);
    let intruder = ClientTls {
        cert_file: Some(cert_file),
        key_file: Some(key_file),
        ..member
    };
    let err = handshake(&server, &intruder, "localhost")
        .await
        .unwrap_err();
    assert!(
        err.contains("server: invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
}

#[test]
fn bad_files_are_named() {
    let ca = Ca::new("test-ca");
    let mut server = ca.server(&["localhost"]);
    let missing = ca.dir.path().join("missing.pem");
    server.key_file = missing.clone();
    let err = server.config().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{err}"
    );

    // The certificate where the key should be.
    server.key_file = server.cert_file.clone();
    let err = server.config().unwrap_err().to_string();
    assert_eq!(
        err,
        format!("{}: no PEM private key in it", server.cert_file.display())
    );

    // A key that is not the certificate's.
    let (_, other_key) = ca.issue("other", &["localhost"]);
    server.key_file = other_key;
    let err = server.config().unwrap_err().to_string();
    assert!(err.contains("not a usable certificate and key"), "{err}");

    let garbage = ca.dir.path().join("garbage.pem");
    fs::write(&garbage, "not a certificate\n").unwrap();
    let client = ClientTls {
        ca_file: Some(garbage.clone()),
        ..ClientTls::default()
    };
    let err = client.config().unwrap_err().to_string();
    assert_eq!(
        err,
        format!("{}: no PEM certificate in it", garbage.display())
    );

    let half = ClientTls {
        ca_file: Some(ca.ca_file()),
        cert_file: Some(ca.ca_file()),
        key_file: None,
    };
    let err = half.config().unwrap_err().to_string();
    assert_eq!(
        err,
        "cert_file is set without key_file: a client certificate needs both"
    );
    assert_eq!(
        server_name("bad name!").unwrap_err().to_string(),
        "\"bad name!\": not a host name or IP address to verify a certificate against"
    );
}

#[test]
fn config_keys_are_checked() {
    let err =
        toml::from_str::<ServerTls>("cert_file = \"a\"\nkey_file = \"b\"\nclient_ca = \"c\"\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("unknown field `client_ca`"), "{err}");
}
