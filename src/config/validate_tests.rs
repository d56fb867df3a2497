//! Unit tests of `validate`.
use super::*;

const BASE: &str = include_str!("testdata/base.toml");

/// The base map with `from` (which must occur exactly once) replaced by `to`.
fn edit(from: &str, to: &str) -> String {
    assert_eq!(
        BASE.matches(from).count(),
        1,
        "{from:?} must occur once in base"
    );
    BASE.replacen(from, to, 1)
}

/// The (line, message) of the error the text must produce.
fn err(text: &str) -> (usize, String) {
    match parse(text, "test.toml") {
        Err(ConfigError::Invalid {
            path,
            line,
            message,
        }) => {
            assert_eq!(path, "test.toml");
            (line, message)
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

fn err_edit(from: &str, to: &str) -> (usize, String) {
    err(&edit(from, to))
}

#[test]
fn base_is_valid() {
    let c = parse(BASE, "test.toml").expect("base map");
    assert_eq!(c.server.listen, "127.0.0.1:6432".parse().unwrap());
    assert_eq!(c.server.pool_size, 10);
    assert_eq!(c.server.pool_timeout, Duration::from_millis(5000));
    assert_eq!(c.server.max_clients, 10_000);
    assert_eq!(c.server.max_message_size, 64 << 20);
    assert_eq!(c.server.unparsed, UnparsedPolicy::DefaultShard);
    assert_eq!(c.users.len(), 1);
    assert!(matches!(&c.users[0].secret, UserSecret::Plain(p) if p == "app"));
    assert_eq!(c.shards[1].password.as_deref(), Some("se/cret"));
    assert_eq!(c.shards[1].port, 5602);
    assert_eq!(c.shards[1].dbname, "app");
    assert_eq!(c.shards[1].weight, 1);
    let m = &c.map;
    assert_eq!(m.epoch, 1);
    assert_eq!(m.slots, 16);
    assert_eq!(m.vnodes, 8);
    assert_eq!(m.default_shard, 0);
    assert_eq!(m.shard_names, ["s0", "s1"]);
    assert_eq!(
        m.slot_owner,
        [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    );
    assert_eq!(m.ranges_of(1), [(8, 15)]);
    assert_eq!(m.slot_counts(), [8, 8]);
}

#[test]
fn table_names_and_keys_fold_to_lower_case() {
    let c = parse(BASE, "test.toml").unwrap();
    let t = c.map.table("accounts").expect("folded name");
    assert_eq!(t.key, "aid");
    assert_eq!(t.key_type, KeyType::BigInt);
    assert!(c.map.table("Accounts").is_none());
}

#[test]
fn toml_syntax_error() {
    let (line, msg) = err_edit("vnodes = 8", "vnodes = 8 8");
    assert_eq!(line, 20);
    assert!(msg.contains("expected"), "{msg}");
}

#[test]
fn unknown_field() {
    let (line, msg) = err_edit("pool_size = 10\n", "pool_size = 10\npool_sise = 3\n");
    assert_eq!(line, 5);
    assert!(
        msg.starts_with("unknown field `pool_sise`, expected one of"),
        "{msg}"
    );
}

#[test]
fn unknown_section() {
    let (line, msg) = err(&format!("{BASE}\n[extra]\nx = 1\n"));
    assert_eq!(line, 31);
    assert!(msg.starts_with("unknown field `extra`"), "{msg}");
}

#[test]
fn missing_field() {
    let (line, msg) = err_edit("pool_size = 10\n", "");
    assert_eq!((line, msg.as_str()), (2, "missing field `pool_size`"));
}

#[test]
fn wrong_value_type() {
    let (line, msg) = err_edit("pool_size = 10", "pool_size = \"ten\"");
    assert_eq!(line, 4);
    assert!(msg.contains("invalid type: string \"ten\""), "{msg}");
}

#[test]
fn listen_not_a_socket_address() {
    let (line, msg) = err_edit("\"127.0.0.1:6432\"", "\"localhost\"");
    assert_eq!(line, 3);
    assert_eq!(
        msg,
        "listen = \"localhost\" is not a socket address (expected e.g. \"127.0.0.1:6432\")"
    );
}

#[test]
fn pool_size_zero() {
    let (line, msg) = err_edit("pool_size = 10", "pool_size = 0");
    assert_eq!(
        (line, msg.as_str()),
        (4, "pool_size must be at least 1 (got 0)")
    );
}

#[test]
fn optional_server_settings() {
    let text = edit(
        "pool_size = 10\n",
        "pool_size = 10\npool_timeout_ms = 250\nconnect_timeout_ms = 1000\nmax_clients = 7\n\
         max_message_size = 4096\nunparsed = \"refuse\"\n",
    );
    let c = parse(&text, "t").unwrap();
    assert_eq!(c.server.pool_timeout, Duration::from_millis(250));
    assert_eq!(c.server.connect_timeout, Duration::from_millis(1000));
    assert_eq!(c.server.max_clients, 7);
    assert_eq!(c.server.max_message_size, 4096);
    assert_eq!(c.server.unparsed, UnparsedPolicy::Refuse);
}

#[test]
fn bad_unparsed_policy() {
    let (line, msg) = err_edit("pool_size = 10\n", "pool_size = 10\nunparsed = \"shrug\"\n");
    assert_eq!(line, 5);
    assert_eq!(
        msg,
        "unparsed = \"shrug\" is not a policy (expected \"default_shard\" or \"refuse\")"
    );
}

#[test]
fn tiny_max_message_size() {
    let (line, msg) = err_edit(
        "pool_size = 10\n",
        "pool_size = 10\nmax_message_size = 10\n",
    );
    assert_eq!(line, 5);
    assert_eq!(msg, "max_message_size must be at least 1024 bytes");
}

#[test]
fn duplicate_user() {
    let (line, msg) = err_edit(
        "password = \"app\"\n",
        "password = \"app\"\n\n[[users]]\nname = \"app\"\npassword = \"x\"\n",
    );
    assert_eq!(
        (line, msg.as_str()),
        (11, "duplicate user \"app\" (first defined on line 7)")
    );
}

#[test]
fn no_users() {
    let (line, msg) = err_edit("[[users]]\nname = \"app\"\npassword = \"app\"\n", "");
    assert_eq!(line, 26);
    assert_eq!(
        msg,
        "no [[users]]: add at least one user (name, password) that may connect"
    );
}

#[test]
fn malformed_scram_verifier() {
    let (line, msg) = err_edit(
        "password = \"app\"",
        "password = \"SCRAM-SHA-256$4096:abc\"",
    );
    assert_eq!(line, 8);
    assert_eq!(
        msg,
        "user \"app\": malformed SCRAM-SHA-256 verifier: expected \
         SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>"
    );
    let (line, msg) = err_edit(
        "password = \"app\"",
        "password = \"SCRAM-SHA-256$4096:c2FsdA==$!!!:AAAA\"",
    );
    assert_eq!(line, 8);
    assert_eq!(
        msg,
        "user \"app\": SCRAM-SHA-256 verifier: StoredKey is not valid base64"
    );
}

#[test]
fn md5_hash_is_refused() {
    let (line, msg) = err_edit(
        "password = \"app\"",
        "password = \"md5c4ca4238a0b923820dcc509a6f75849b\"",
    );
    assert_eq!(line, 8);
    assert!(
        msg.starts_with("user \"app\": md5 password hashes cannot be used"),
        "{msg}"
    );
}

#[test]
fn scram_verifier_round_trips() {
    let derived = UserSecret::Plain("app".into()).to_verifier(b"0123456789abcdef", 4096);
    let UserSecret::Scram {
        iterations,
        salt,
        stored_key,
        server_key,
    } = derived
    else {
        panic!("not a verifier");
    };
    let verifier = format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64.encode(&salt),
        BASE64.encode(&stored_key),
        BASE64.encode(&server_key)
    );
    let text = edit("password = \"app\"", &format!("password = \"{verifier}\""));
    let c = parse(&text, "t").unwrap();
    match &c.users[0].secret {
        UserSecret::Scram {
            iterations: i,
            salt: s,
            stored_key: k,
            server_key: v,
        } => {
            assert_eq!((*i, s, k, v), (4096, &salt, &stored_key, &server_key));
        }
        other => panic!("{other:?}"),
    }
    assert!(c.users[0].secret.scram_secret().is_some());
}

#[test]
fn duplicate_shard() {
    let (line, msg) = err_edit("name = \"s1\"", "name = \"s0\"");
    assert_eq!(
        (line, msg.as_str()),
        (15, "duplicate shard \"s0\" (first defined on line 11)")
    );
}

#[test]
fn non_postgres_url() {
    let (line, msg) = err_edit(
        "postgres://postgres@127.0.0.1:5601/app",
        "mysql://root:pw@127.0.0.1/app",
    );
    assert_eq!(line, 12);
    assert_eq!(
        msg,
        "shard \"s0\": url \"mysql://root:***@127.0.0.1/app\" is not a postgres:// or postgresql:// URL"
    );
}

#[test]
fn url_without_database() {
    let (line, msg) = err_edit(
        "postgres://postgres@127.0.0.1:5601/app",
        "postgres://postgres@127.0.0.1:5601",
    );
    assert_eq!(line, 12);
    assert_eq!(
        msg,
        "shard \"s0\": url has no database name: write postgres://user@host:port/database"
    );
}

#[test]
fn url_bad_port() {
    let (line, msg) = err_edit("127.0.0.1:5601", "127.0.0.1:99999");
    assert_eq!(line, 12);
    assert_eq!(
        msg,
        "shard \"s0\": url port \"99999\" is not a TCP port (1-65535)"
    );
}

#[test]
fn shards_on_different_databases() {
    let (line, msg) = err_edit("5602/app", "5602/other");
    assert_eq!(line, 16);
    assert_eq!(
        msg,
        "shard \"s1\" uses database \"other\" but shard \"s0\" uses \"app\": \
         every shard must hold the same logical database"
    );
}

#[test]
fn bad_weight() {
    let (line, msg) = err_edit("5601/app\"\n", "5601/app\"\nweight = 0\n");
    assert_eq!(line, 13);
    assert_eq!(
        msg,
        "shard \"s0\": weight must be between 1 and 100 (got 0)"
    );
}

#[test]
fn slots_not_a_power_of_two() {
    for bad in ["12", "0", "-16", "131072"] {
        let (line, msg) = err_edit("slots = 16", &format!("slots = {bad}"));
        assert_eq!(line, 19);
        assert_eq!(
            msg,
            format!("slots must be a power of two between 1 and 65536 (got {bad})")
        );
    }
}

#[test]
fn vnodes_zero() {
    let (line, msg) = err_edit("vnodes = 8", "vnodes = 0");
    assert_eq!(
        (line, msg.as_str()),
        (20, "vnodes must be between 1 and 4096 (got 0)")
    );
}

#[test]
fn default_shard() {
    let ok = edit("vnodes = 8\n", "vnodes = 8\ndefault_shard = \"s1\"\n");
    assert_eq!(parse(&ok, "t").unwrap().map.default_shard, 1);
    let (line, msg) = err_edit("vnodes = 8\n", "vnodes = 8\ndefault_shard = \"s7\"\n");
    assert_eq!(line, 21);
    assert_eq!(msg, "default_shard \"s7\" is not a shard (shards: s0, s1)");
}

#[test]
fn bad_key_type() {
    let (line, msg) = err_edit("type = \"bigint\"", "type = \"float\"");
    assert_eq!(line, 25);
    assert_eq!(
        msg,
        "table \"accounts\": unsupported key type \"float\" \
         (expected smallint, integer, bigint, text or uuid)"
    );
}

#[test]
fn duplicate_table_after_folding() {
    let (line, msg) = err_edit(
        "type = \"bigint\"\n",
        "type = \"bigint\"\n\n[[tables]]\nname = \"ACCOUNTS\"\nkey = \"id\"\ntype = \"integer\"\n",
    );
    assert_eq!(
        (line, msg.as_str()),
        (
            28,
            "duplicate table \"accounts\" (first defined on line 23)"
        )
    );
}

#[test]
fn schema_qualified_table() {
    let (line, msg) = err_edit("\"Accounts\"", "\"public.accounts\"");
    assert_eq!(line, 23);
    assert_eq!(
        msg,
        "table name \"public.accounts\" must not be schema-qualified: write just the table name"
    );
}

#[test]
fn slot_map_missing() {
    let cut = BASE.find("[slot_map]").unwrap();
    let (line, msg) = err(&BASE[..cut]);
    assert_eq!(line, 25);
    assert_eq!(
        msg,
        "no [slot_map]: run `pgshard map init -c test.toml` to assign slots to shards"
    );
    // ... but the ring can fill it in.
    let c = parse_with(&BASE[..cut], "t", SlotMapSource::Ring).unwrap();
    assert_eq!(c.map.slot_owner.len(), 16);
}

#[test]
fn slot_map_unknown_shard() {
    let (line, msg) = err_edit("s1 = [", "s9 = [");
    assert_eq!(line, 29);
    assert_eq!(
        msg,
        "[slot_map] names unknown shard \"s9\" (shards: s0, s1)"
    );
}

#[test]
fn slot_range_out_of_bounds() {
    let (line, msg) = err_edit("\"15\"", "\"15-16\"");
    assert_eq!(line, 29);
    assert_eq!(
        msg,
        "[slot_map] s1: slot range \"15-16\" is out of bounds: slots are 0-15"
    );
}

#[test]
fn slot_range_malformed() {
    for bad in ["8..14", "-3", "8-", "x", "8-14-15", ""] {
        let (line, msg) = err_edit("\"8-14\"", &format!("\"{bad}\""));
        assert_eq!(line, 29);
        assert_eq!(
            msg,
            format!("[slot_map] s1: \"{bad}\" is not a slot range (expected \"a-b\" or \"n\")")
        );
    }
    let (line, msg) = err_edit("\"8-14\"", "\"14-8\"");
    assert_eq!(line, 29);
    assert_eq!(
        msg,
        "[slot_map] s1: slot range \"14-8\" is reversed (write \"8-14\")"
    );
}

#[test]
fn slot_assigned_twice() {
    let (line, msg) = err_edit("\"0-7\"", "\"0-8\"");
    assert_eq!(line, 29);
    assert_eq!(
        msg,
        "slot 8 is assigned twice: to s0 (line 28) and to s1 (line 29)"
    );
}

#[test]
fn slot_missing() {
    let (line, msg) = err_edit("s1 = [\"8-14\", \"15\"]", "s1 = [\"9\", \"11-13\"]");
    assert_eq!(line, 27);
    assert_eq!(
        msg,
        "[slot_map] leaves 4 slot(s) without a shard: 8, 10, 14-15; \
         every slot 0-15 must be assigned exactly once"
    );
}

#[test]
fn many_missing_ranges_are_abbreviated() {
    let (line, msg) = err_edit(
        "s0 = [\"0-7\"]\ns1 = [\"8-14\", \"15\"]",
        "s0 = [\"1\", \"3\", \"5\"]\ns1 = [\"9\", \"11\", \"13\", \"15\"]",
    );
    assert_eq!(line, 27);
    assert_eq!(
        msg,
        "[slot_map] leaves 9 slot(s) without a shard: 0, 2, 4, 6-8, 10, and 2 more ranges; \
         every slot 0-15 must be assigned exactly once"
    );
}

#[test]
fn shard_without_slots_is_allowed() {
    let text = edit(
        "s0 = [\"0-7\"]\ns1 = [\"8-14\", \"15\"]",
        "s0 = []\ns1 = [\"0-15\"]",
    );
    let c = parse(&text, "t").unwrap();
    assert_eq!(c.map.slot_counts(), [0, 16]);
    assert!(c.map.ranges_of(0).is_empty());
}

#[test]
fn url_forms() {
    let u = PgUrl::parse("postgresql://u%40x:p%3Aw@[::1]/d%20b").unwrap();
    assert_eq!(
        u,
        PgUrl {
            host: "::1".into(),
            port: 5432,
            user: "u@x".into(),
            password: Some("p:w".into()),
            dbname: "d b".into(),
        }
    );
    let u = PgUrl::parse("postgres://me@db.example:6000/app").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.password),
        ("db.example", 6000, None)
    );
    for bad in [
        "postgres://@h/db",
        "postgres://u@/db",
        "postgres://u@h/db?sslmode=require",
        "postgres://u@h1,h2/db",
        "postgres://u@h:0/db",
        "postgres://u@[::1/db",
        "postgres://u@h/a/b",
        "http://u@h/db",
    ] {
        assert!(PgUrl::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn redaction_hides_passwords_only() {
    assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
}

#[test]
fn unreadable_file_is_io_error() {
    let e = load(Path::new("/nonexistent/shardmap.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
}

/// The base map with a reference table `kinds` after the sharded table (its `name` is
/// on line 28, `extra` starts on line 29).
fn with_reference(extra: &str) -> String {
    edit(
        "type = \"bigint\"\n",
        &format!("type = \"bigint\"\n\n[[tables]]\nname = \"Kinds\"\n{extra}"),
    )
}

#[test]
fn reference_tables() {
    let c = parse(&with_reference("replicated = true\n"), "t").unwrap();
    assert!(c.map.is_replicated("kinds"));
    assert!(c.map.table("kinds").is_none());
    assert!(c.map.table("accounts").is_some());
    // `replicated = false` is an ordinary sharded table
    let c = parse(
        &with_reference("replicated = false\nkey = \"id\"\ntype = \"integer\"\n"),
        "t",
    )
    .unwrap();
    assert!(!c.map.is_replicated("kinds"));
    assert!(c.map.table("kinds").is_some());
}

#[test]
fn reference_table_errors_name_the_line() {
    let (line, msg) = err(&with_reference("replicated = true\nkey = \"id\"\n"));
    assert_eq!(line, 30);
    assert!(
        msg.contains("\"kinds\" is replicated") && msg.contains("remove `key`"),
        "{msg}"
    );
    let (line, msg) = err(&with_reference("replicated = true\ntype = \"bigint\"\n"));
    assert_eq!(line, 30);
    assert!(msg.contains("remove `type`"), "{msg}");
    let (line, msg) = err(&with_reference(""));
    assert_eq!(line, 28);
    assert!(
        msg.contains("has no `key`") && msg.contains("replicated = true"),
        "{msg}"
    );
    let (line, msg) = err(&with_reference("key = \"id\"\n"));
    assert_eq!(line, 28);
    assert!(msg.contains("has no `type`"), "{msg}");
    let (line, msg) = err(&with_reference("replicated = \"yes\"\n"));
    assert_eq!(line, 29);
    assert!(msg.contains("invalid type"), "{msg}");
    // one name, sharded and replicated
    let (line, msg) = err(&edit(
        "type = \"bigint\"\n",
        "type = \"bigint\"\n\n[[tables]]\nname = \"accounts\"\nreplicated = true\n",
    ));
    assert_eq!(line, 28);
    assert!(msg.contains("duplicate table \"accounts\""), "{msg}");
}

#[test]
fn epoch_defaults_to_one_and_is_read() {
    assert_eq!(parse(BASE, "t").unwrap().map.epoch, 1);
    let c = parse(&edit("vnodes = 8\n", "vnodes = 8\nepoch = 7\n"), "t").unwrap();
    assert_eq!(c.map.epoch, 7);
    let (line, message) = err_edit("vnodes = 8\n", "vnodes = 8\nepoch = 0\n");
    assert_eq!(line, 21);
    assert!(message.contains("epoch"), "{message}");
}

/// `[server] <key>` defaults to `default`, is read from the file, and 0 is refused
/// naming the key.
fn check_ms_setting(key: &str, default: Duration, read: fn(&Config) -> Duration) {
    assert_eq!(read(&parse(BASE, "t").unwrap()), default, "{key}");
    let set = |v: u64| {
        edit(
            "pool_size = 10\n",
            &format!("pool_size = 10\n{key} = {v}\n"),
        )
    };
    assert_eq!(
        read(&parse(&set(250), "t").unwrap()),
        Duration::from_millis(250)
    );
    let err = parse(&set(0), "t").unwrap_err();
    assert!(err.to_string().contains(key), "{err}");
}

#[test]
fn login_timeout_defaults_to_a_minute_and_must_be_positive() {
    check_ms_setting("login_timeout_ms", Duration::from_secs(60), |c| {
        c.server.login_timeout
    });
}

#[test]
fn hold_timeout_defaults_and_is_read() {
    check_ms_setting("hold_timeout_ms", Duration::from_millis(10_000), |c| {
        c.server.hold_timeout
    });
}

#[test]
fn health_defaults() {
    let c = parse(BASE, "t").unwrap();
    assert_eq!(c.health, HealthConfig::default());
    assert!(c.health.enabled);
    assert_eq!(c.health.failure_threshold, 3);
    assert_eq!(c.health.interval, Duration::from_millis(1000));
}

#[test]
fn health_settings() {
    let text = format!(
        "{BASE}\n[health]\nenabled = false\ninterval_ms = 100\ntimeout_ms = 50\n\
         failure_threshold = 2\nsuccess_threshold = 3\nopen_ms = 250\n"
    );
    let h = parse(&text, "t").unwrap().health;
    assert_eq!(
        h,
        HealthConfig {
            enabled: false,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(50),
            failure_threshold: 2,
            success_threshold: 3,
            open: Duration::from_millis(250),
        }
    );
}

#[test]
fn health_errors_name_the_line() {
    let base_lines = BASE.lines().count();
    let (line, msg) = err(&format!(
        "{BASE}\n[health]\ninterval_ms = 100\nfailure_threshold = 0\n"
    ));
    assert_eq!(line, base_lines + 4);
    assert_eq!(msg, "failure_threshold must be at least 1 (got 0)");
    let (line, msg) = err(&format!("{BASE}\n[health]\nintervall_ms = 100\n"));
    assert_eq!(line, base_lines + 3);
    assert!(msg.contains("unknown field `intervall_ms`"), "{msg}");
}
