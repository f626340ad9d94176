//! Security defaults against the real servers (`docs/security.md`):
//! the LMTP and policy servers refuse clients outside their allow lists
//! (tested from 127.0.0.2 with `allow = ["127.0.0.1/32"]`: only loopback
//! traffic), and the service DN has least privilege in the real slapd.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use mailfleet_runtime::{admin, topology::TopicSpec, Topology};
use mailfleet_tests::{directory::*, ingest::*, *};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpSocket, TcpStream},
};

/// LDAP result code (RFC 4511) of a write the ACLs refuse.
const INSUFFICIENT_ACCESS: i32 = 50;

/// A TCP connection to `port` on 127.0.0.1 from the local address `from`.
async fn connect_from(from: &str, port: u16) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse()?)?;
    let to: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    Ok(tokio::time::timeout(Duration::from_secs(5), socket.connect(to)).await??)
}

/// Everything the server sends until it closes (at most 5 s). A reset counts
/// as the close: a server that closes with the client's request still unread
/// makes the kernel answer with RST instead of FIN, depending on timing.
async fn read_to_close(stream: &mut TcpStream) -> anyhow::Result<String> {
    let mut said = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| anyhow::anyhow!("the server did not close the connection within 5 s"))?;
        match read {
            Ok(0) => break,
            Ok(n) => said.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(String::from_utf8_lossy(&said).into_owned())
}

/// The counter's value on a child's metrics endpoint, once it is served.
async fn counter(metrics_port: u16, name: &str) -> anyhow::Result<f64> {
    let mut text = String::new();
    wait_until("the metrics endpoint", Duration::from_secs(30), || {
        text = scrape(metrics_port).unwrap_or_default();
        has_metric(&text, name)
    })
    .await?;
    Ok(metric_sum(&text, name, &[]))
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn lmtp_on_all_addresses_refuses_clients_outside_its_allow_list() -> anyhow::Result<()> {
    let world = MailWorld::new("lmtp-allow", kafka()).await?;
    let metrics_port = free_port();
    let config = world.write_config("lmtp.toml", metrics_port, "allow = [\"127.0.0.1/32\"]\n")?;
    // Bound on every address: the allow list, not the bind, keeps others out.
    let text = std::fs::read_to_string(&config)?.replace(
        &format!("listen = \"127.0.0.1:{}\"", world.lmtp_port),
        &format!("listen = \"0.0.0.0:{}\"", world.lmtp_port),
    );
    anyhow::ensure!(
        text.contains("0.0.0.0:"),
        "the listen key was not rewritten"
    );
    std::fs::write(&config, text)?;
    let log = world.dir.join("lmtp.log");
    let _lmtp = Children(vec![spawn_mailfleet(&config, &["lmtp"], &log)?]);
    let port = world.lmtp_port;
    wait_listening("the LMTP server", port).await?;

    let mut outside = connect_from("127.0.0.2", port).await?;
    let said = read_to_close(&mut outside).await?;
    assert!(
        said.starts_with("421 4.7.0 ") && said.ends_with("\r\n") && said.lines().count() == 1,
        "a client outside lmtp.allow must get one 421 4.7.0 line, then the close: {said:?}"
    );
    // Nothing it sends after that is read: the connection is gone.
    let _ = outside.write_all(b"LHLO intruder\r\n").await;

    let inside = connect_from("127.0.0.1", port).await?;
    let mut inside = BufReader::new(inside);
    let mut greeting = String::new();
    inside.read_line(&mut greeting).await?;
    assert!(greeting.starts_with("220 "), "{greeting:?}");

    assert_eq!(
        counter(metrics_port, "mailfleet_lmtp_connections_denied_total").await?,
        1.0
    );
    let text = read_log(&log);
    assert!(
        text.lines()
            .any(|l| l.contains("client not in lmtp.allow") && l.contains("127.0.0.2:")),
        "no log line naming the refused client:\n{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_server_closes_clients_outside_its_allow_list() -> anyhow::Result<()> {
    let name = unique("policy-allow");
    let dir = scratch_dir(&name);
    let (attempts, decisions) = (format!("{name}.attempts"), format!("{name}.decisions"));
    let topology = Topology {
        topics: [&attempts, &decisions]
            .iter()
            .map(|t| (t.to_string(), TopicSpec::scratch(1)))
            .collect::<BTreeMap<_, _>>(),
        consumers: BTreeMap::new(),
    };
    admin::apply(&kafka(), &topology).await?;
    let (port, metrics_port) = (free_port(), free_port());
    let config = dir.join("policy.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = {brokers:?}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [policy]\nlisten = \"127.0.0.1:{port}\"\nallow = [\"127.0.0.1/32\"]\n\
             attempts_topic = {attempts:?}\ndecisions_topic = {decisions:?}\n",
            brokers = kafka().brokers,
        ),
    )?;
    let log = dir.join("policy.log");
    let _policy = Children(vec![spawn_mailfleet(&config, &["policy"], &log)?]);
    wait_listening("the policy server", port).await?;
    let request = b"request=smtpd_access_policy\nprotocol_state=CONNECT\n\n";

    let mut outside = connect_from("127.0.0.2", port).await?;
    let _ = outside.write_all(request).await;
    let said = read_to_close(&mut outside).await?;
    assert_eq!(
        said, "",
        "a client outside policy.allow must be closed unanswered"
    );

    let mut inside = BufReader::new(connect_from("127.0.0.1", port).await?);
    inside.get_mut().write_all(request).await?;
    let mut answer = String::new();
    inside.read_line(&mut answer).await?;
    assert_eq!(answer, "action=DUNNO\n");

    assert_eq!(
        counter(metrics_port, "mailfleet_policy_connections_denied_total").await?,
        1.0
    );
    let text = read_log(&log);
    assert!(
        text.lines()
            .any(|l| l.contains("client not in policy.allow") && l.contains("127.0.0.2:")),
        "no log line naming the refused client:\n{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_allow_entry_stops_the_server_naming_it() -> anyhow::Result<()> {
    let dir = scratch_dir("allow-bad");
    let config = dir.join("bad.toml");
    std::fs::write(
        &config,
        "[metrics]\nlisten = \"\"\n[lmtp]\nallow = [\"127.0.0.1/32\", \"10.0.0.0/33\"]\n\
         [policy]\nallow = [\"localhost\"]\n",
    )?;
    let out = std::process::Command::new(mailfleet_bin())
        .arg("--config")
        .arg(&config)
        .arg("lmtp")
        .stdin(std::process::Stdio::null())
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with a bad allow list: {err}"
    );
    assert!(err.contains("lmtp.allow[1] = \"10.0.0.0/33\""), "{err}");
    assert!(err.contains("policy.allow[0] = \"localhost\""), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    Ok(())
}

/// The service DN can do its job in both account trees and nothing else;
/// it may set passwords but never read or compare them.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_dn_has_least_privilege_in_ldap() -> anyhow::Result<()> {
    let _slapd = SLAPD.read().await;
    require_slapd()?;
    let domain = format!("{}.test", unique("acl"));
    let address = format!("ann@{domain}");
    let (free_dn, paid_dn) = (
        account_dn(PEOPLE, &address),
        account_dn(PAID_PEOPLE, &address),
    );
    let _cleanup = Cleanup(vec![free_dn.clone(), paid_dn.clone()]);
    let (first, second) = (random_password(), random_password());

    // Its job: add, change and delete accounts and their children, in both trees.
    for dn in [&free_dn, &paid_dn] {
        add(&account_ldif(dn, &address, &argon2_hash(&first)?, "active"))?;
        add(&format!(
            "dn: ou=contacts,{dn}\nobjectClass: organizationalUnit\nou: contacts\n"
        ))?;
        let out = ldap_tool(
            "ldapmodify",
            Bind::Service,
            &[],
            &format!(
                "dn: {dn}\nchangetype: modify\nreplace: mailfleetStatus\nmailfleetStatus: inactive\n-\n\
                 replace: userPassword\nuserPassword: {}\n",
                argon2_hash(&second)?
            ),
        )?;
        assert_eq!(
            rc(&out),
            SUCCESS,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(values(dn, "mailfleetStatus")?, ["inactive"]);
        assert_eq!(bind(dn, &second)?, SUCCESS, "the password it set binds");

        // Passwords: write-only. Not returned, not matched by a filter, not comparable.
        let (code, text) = search(dn, "base", "(objectClass=*)", &["*", "userPassword"])?;
        assert_eq!(code, SUCCESS);
        assert!(text.contains("mailfleetStatus: inactive"), "{text}");
        assert!(!text.to_lowercase().contains("userpassword"), "{text}");
        let (code, text) = search(dn, "base", "(userPassword=*)", &["1.1"])?;
        assert!(
            code == SUCCESS && dns(&text).is_empty(),
            "a filter on userPassword matched: {text}"
        );
        let out = ldap_tool(
            "ldapcompare",
            Bind::Service,
            &[dn, &format!("userPassword:{second}")],
            "",
        )?;
        assert_eq!(
            rc(&out),
            INSUFFICIENT_ACCESS,
            "compare userPassword: {}",
            text_of(&out)
        );

        // The account itself may read its entry but not its password, and write nothing.
        let out = ldap_tool(
            "ldapsearch",
            Bind::As(dn, &second),
            &["-LLL", "-b", dn, "-s", "base", "*", "userPassword"],
            "",
        )?;
        let own = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(
            own.contains("mailfleetstatus") && !own.contains("userpassword"),
            "{own}"
        );
    }

    // Outside the account trees: no write anywhere, no read of the services.
    let refused = [
        (
            "add below ou=services",
            format!("dn: cn=intruder,ou=services,{SUFFIX}\nobjectClass: organizationalRole\ncn: intruder\n"),
        ),
        (
            "add below the suffix",
            format!("dn: ou=intruders,{SUFFIX}\nobjectClass: organizationalUnit\nou: intruders\n"),
        ),
        (
            "change its own entry",
            format!("dn: {SERVICE_DN}\nchangetype: modify\nreplace: description\ndescription: x\n"),
        ),
        (
            "set its own password",
            format!("dn: {SERVICE_DN}\nchangetype: modify\nreplace: userPassword\nuserPassword: {{SSHA}}AAAA\n"),
        ),
        (
            "change ou=people itself",
            format!("dn: {PEOPLE}\nchangetype: modify\nreplace: description\ndescription: x\n"),
        ),
        (
            "change the paid tree's root",
            format!("dn: {PAID_BASE}\nchangetype: modify\nreplace: description\ndescription: x\n"),
        ),
        (
            "change the suffix entry",
            format!("dn: {SUFFIX}\nchangetype: modify\nreplace: o\no: x\n"),
        ),
    ];
    for (what, ldif) in &refused {
        let tool = if ldif.contains("changetype") {
            "ldapmodify"
        } else {
            "ldapadd"
        };
        let out = ldap_tool(tool, Bind::Service, &[], ldif)?;
        assert_eq!(rc(&out), INSUFFICIENT_ACCESS, "{what}: {}", text_of(&out));
    }
    let out = ldap_tool("ldapdelete", Bind::Service, &[PEOPLE], "")?;
    assert_eq!(
        rc(&out),
        INSUFFICIENT_ACCESS,
        "delete ou=people: {}",
        text_of(&out)
    );
    let (_, text) = search(
        &format!("ou=services,{SUFFIX}"),
        "sub",
        "(objectClass=*)",
        &["*"],
    )?;
    assert!(
        dns(&text).is_empty(),
        "the service DN reads ou=services: {text}"
    );
    // The service DN still binds with its password: nothing above changed it.
    let out = ldap_tool("ldapwhoami", Bind::Service, &[], "")?;
    assert_eq!(rc(&out), SUCCESS, "{}", text_of(&out));
    Ok(())
}

fn text_of(out: &std::process::Output) -> String {
    format!(
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
