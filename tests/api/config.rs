//! Configuration layering, the seed app's names, `.env`, and clear failures,
//! observed through `roomcontrol config` as a user would.

use std::path::Path;

use crate::process::roomcontrol;

fn effective(dir: &Path, env: &[(&str, &str)]) -> serde_json::Value {
    let output = roomcontrol(dir, env, &["config"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON")
}

fn failure(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let output = roomcontrol(dir, env, args);
    assert_eq!(output.status.code(), Some(2), "a bad configuration exits 2");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr.trim().to_owned()
}

#[test]
fn defaults_work_with_a_local_livekit_dev_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = effective(dir.path(), &[]);
    assert_eq!(config["server"]["host"], "127.0.0.1");
    assert_eq!(config["server"]["port"], 50051);
    assert_eq!(config["livekit"]["url"], "http://localhost:7880");
    assert_eq!(config["livekit"]["api_key"], "devkey");
    assert_eq!(config["livekit"]["api_secret"], "[redacted]");
}

#[test]
fn the_file_then_the_seed_names_then_roomcontrol_variables_win_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("roomcontrol.toml"),
        "[server]\nport = 1111\n[livekit]\nurl = \"http://from-file:7880\"\napi_key = \"file-key\"\ntimeout = \"3s\"\n",
    )
    .unwrap();
    let config = effective(dir.path(), &[]);
    assert_eq!((config["server"]["port"].as_u64(), config["livekit"]["timeout"].as_str()), (Some(1111), Some("3s")));

    let seed = [("PORT", "2222"), ("LIVEKIT_URL", "wss://from-seed.example.com"), ("LIVEKIT_API_KEY", "seed-key")];
    let config = effective(dir.path(), &seed);
    assert_eq!(config["server"]["port"], 2222);
    assert_eq!(config["livekit"]["url"], "wss://from-seed.example.com");
    assert_eq!(config["livekit"]["api_key"], "seed-key");

    let mut both = seed.to_vec();
    both.extend([("ROOMCONTROL_SERVER__PORT", "3333"), ("ROOMCONTROL_LIVEKIT__API_KEY", "roomcontrol-key")]);
    let config = effective(dir.path(), &both);
    assert_eq!(config["server"]["port"], 3333);
    assert_eq!(config["livekit"]["api_key"], "roomcontrol-key");
    assert_eq!(config["livekit"]["timeout"], "3s", "keys set nowhere else keep the file's value");
}

#[test]
fn a_dot_env_file_fills_in_what_the_environment_does_not_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "LIVEKIT_URL=ws://dotenv:7880\nLIVEKIT_API_KEY=dotenv-key\nLIVEKIT_API_SECRET=0123456789\n",
    )
    .unwrap();
    let config = effective(dir.path(), &[]);
    assert_eq!(config["livekit"]["url"], "ws://dotenv:7880");
    assert_eq!(config["livekit"]["api_key"], "dotenv-key");
    let config = effective(dir.path(), &[("LIVEKIT_API_KEY", "real-env-key")]);
    assert_eq!(config["livekit"]["api_key"], "real-env-key", "the real environment wins over .env");
}

#[test]
fn an_explicit_config_file_is_read_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("custom.toml"), "[tokens]\ndefault_ttl = \"1h\"\n").unwrap();
    let config = effective(dir.path(), &[("ROOMCONTROL_CONFIG", "custom.toml")]);
    assert_eq!(config["tokens"]["default_ttl"], "1h");
    let message = failure(dir.path(), &[], &["--config", "nope.toml", "config"]);
    assert!(message.contains("config file nope.toml does not exist"), "{message}");
}

#[test]
fn bad_values_stop_start_up_with_one_line_naming_the_key_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[(&str, &str)], &str); 7] = [
        (
            &[("PORT", "http")],
            "server.port: invalid type: found string \"http\", expected u16 (from PORT environment variable)",
        ),
        (
            &[("LIVEKIT_URL", "ftp://lk")],
            "livekit.url = \"ftp://lk\" (from LIVEKIT_URL environment variable): expected an http://, https://, ws:// or wss:// URL",
        ),
        (
            &[("ROOMCONTROL_LIVEKIT__TIMEOUT", "soon")],
            "livekit.timeout: invalid value string \"soon\", expected a duration (from ROOMCONTROL_LIVEKIT__TIMEOUT environment variable)",
        ),
        (
            &[("ROOMCONTROL_TOKENS__MAX_TTL", "1h")],
            "tokens.default_ttl = \"6h\" (built-in default): expected at most tokens.max_ttl (1h)",
        ),
        (
            &[("ROOMCONTROL_SERVER__CORS__ALLOWED_ORIGINS", "[\"https://app.example.com/path\"]")],
            "server.cors.allowed_origins = \"https://app.example.com/path\"",
        ),
        (
            &[("ROOMCONTROL_SERVER__WORKER_THREADS", "4096")],
            "server.worker_threads = 4096 (from ROOMCONTROL_SERVER__WORKER_THREADS environment variable): expected 0 (one per CPU) to 1024",
        ),
        (
            &[("ROOMCONTROL_LIVEKIT__API_SECRET", "")],
            "livekit.api_secret = (empty) (from ROOMCONTROL_LIVEKIT__API_SECRET environment variable)",
        ),
    ];
    for (env, expected) in cases {
        let message = failure(dir.path(), env, &["config"]);
        assert!(message.starts_with("roomcontrol: invalid configuration: "), "{message}");
        assert!(message.contains(expected), "{env:?}:\n  got      {message}\n  expected {expected}");
    }
}

#[test]
fn unknown_keys_are_refused_with_their_source() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("roomcontrol.toml"), "[livekit]\nsecret = \"oops\"\n").unwrap();
    let message = failure(dir.path(), &[], &["config"]);
    assert!(message.contains("livekit.secret: unknown field"), "{message}");
    assert!(message.contains("roomcontrol.toml"), "{message}");
    let message = failure(tempfile::tempdir().unwrap().path(), &[("ROOMCONTROL_SERVR__PORT", "1")], &["config"]);
    assert!(message.contains("ROOMCONTROL_SERVR__PORT environment variable"), "{message}");
}

#[test]
fn secrets_never_appear_in_errors_or_output() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "[123, 456]";
    let output = roomcontrol(dir.path(), &[("LIVEKIT_API_SECRET", secret), ("PORT", "bad")], &["config"]);
    assert!(!String::from_utf8_lossy(&output.stderr).contains("123"));
    let config = effective(dir.path(), &[("LIVEKIT_API_SECRET", "0123")]);
    assert_eq!(config["livekit"]["api_secret"], "[redacted]");
}

#[test]
fn kubernetes_service_links_are_not_mistaken_for_settings() {
    let dir = tempfile::tempdir().unwrap();
    let links = [
        ("ROOMCONTROL_SERVICE_HOST", "10.0.0.12"),
        ("ROOMCONTROL_SERVICE_PORT", "50051"),
        ("ROOMCONTROL_SERVICE_PORT_GRPC", "50051"),
        ("ROOMCONTROL_PORT", "tcp://10.0.0.12:50051"),
        ("ROOMCONTROL_PORT_50051_TCP_ADDR", "10.0.0.12"),
    ];
    let config = effective(dir.path(), &links);
    assert_eq!(config["server"]["port"], 50051);
}

#[test]
fn identity_providers_need_an_audience_and_appear_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("roomcontrol.toml"),
        "[[auth.issuers]]\nissuer = \"https://login.example.com/\"\njwks_url = \"https://login.example.com/jwks.json\"\n",
    )
    .unwrap();
    let message = failure(dir.path(), &[], &["config"]);
    assert!(message.contains("auth.issuers[0].audiences = []"), "{message}");
    std::fs::write(
        dir.path().join("roomcontrol.toml"),
        "[[auth.issuers]]\nissuer = \"https://a/\"\naudiences = [\"rc\"]\nsecret = \"s\"\n[[auth.issuers]]\nissuer = \"https://a/\"\naudiences = [\"rc\"]\nsecret = \"t\"\n",
    )
    .unwrap();
    let message = failure(dir.path(), &[], &["config"]);
    assert!(message.contains("auth.issuers[1].issuer") && message.contains("each issuer once"), "{message}");
    std::fs::write(
        dir.path().join("roomcontrol.toml"),
        "[[auth.issuers]]\nissuer = \"https://a/\"\naudiences = [\"rc\"]\nsecret = 987654321\n",
    )
    .unwrap();
    let message = failure(dir.path(), &[], &["config"]);
    assert!(!message.contains("987654321"), "an issuer's secret never appears: {message}");
}

#[test]
fn durations_are_printed_as_the_configuration_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = effective(dir.path(), &[]);
    assert_eq!(config["tokens"]["max_ttl"], "24h", "not humantime's 1day");
    assert_eq!(config["tokens"]["default_ttl"], "6h");
    assert_eq!(config["auth"]["self_service"]["max_ttl"], "1h");

    let env = [("ROOMCONTROL_TOKENS__MAX_TTL", "7d"), ("ROOMCONTROL_SERVER__MAX_CONNECTION_AGE", "90m")];
    let config = effective(dir.path(), &env);
    assert_eq!(config["tokens"]["max_ttl"], "168h");
    assert_eq!(config["server"]["max_connection_age"], "1h 30m");
    // What is printed is read back unchanged.
    let printed = [
        ("ROOMCONTROL_TOKENS__MAX_TTL", config["tokens"]["max_ttl"].as_str().unwrap()),
        ("ROOMCONTROL_SERVER__MAX_CONNECTION_AGE", config["server"]["max_connection_age"].as_str().unwrap()),
    ];
    let again = effective(dir.path(), &printed);
    assert_eq!(again["tokens"]["max_ttl"], "168h");
    assert_eq!(again["server"]["max_connection_age"], "1h 30m");

    let message = failure(dir.path(), &[("ROOMCONTROL_TOKENS__DEFAULT_TTL", "2d")], &["config"]);
    assert!(message.contains("tokens.default_ttl = \"48h\""), "{message}");
    assert!(message.contains("expected at most tokens.max_ttl (24h)"), "{message}");
}

#[test]
fn the_printed_log_filter_is_the_one_in_force_rust_log_included() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("roomcontrol.toml"), "[log]\nlevel = \"warn\"\n").unwrap();
    let log = &effective(dir.path(), &[])["log"];
    assert_eq!(log["level"], "warn");
    assert_eq!(log["effective_filter"], "warn");
    assert_eq!(log["effective_filter_source"], "log.level");
    assert!(log.get("note").is_none(), "{log}");

    let log = &effective(dir.path(), &[("RUST_LOG", "roomcontrol=debug")])["log"];
    assert_eq!(log["level"], "warn", "the configured value, as configured");
    assert_eq!(log["effective_filter"], "roomcontrol=debug");
    assert_eq!(log["effective_filter_source"], "RUST_LOG");
    assert!(log["note"].as_str().unwrap().contains("RUST_LOG is set: it overrides log.level"), "{log}");

    let log = &effective(dir.path(), &[("RUST_LOG", "")])["log"];
    assert_eq!(
        (log["effective_filter"].as_str(), log["effective_filter_source"].as_str()),
        (Some(""), Some("RUST_LOG"))
    );
    assert!(log["note"].as_str().unwrap().contains("turns every log line off"), "{log}");

    let log = &effective(dir.path(), &[("RUST_LOG", "debug=what=x")])["log"];
    assert_eq!(log["effective_filter"], "warn", "an invalid RUST_LOG is ignored");
    assert_eq!(log["effective_filter_source"], "log.level");
    assert!(log["note"].as_str().unwrap().contains("is not a tracing filter"), "{log}");
}

fn repository_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The README's example `roomcontrol.toml`, as printed there.
fn readme_example_config() -> String {
    let readme = repository_file("README.md");
    let after = readme.split_once("An example `roomcontrol.toml`:").expect("the README has an example config").1;
    let block = after.split_once("```toml\n").expect("a toml block follows").1;
    block.split_once("```").expect("the block ends").0.to_owned()
}

#[test]
fn the_readmes_example_config_is_refused_until_its_placeholder_hash_is_replaced() {
    let example = readme_example_config();
    assert!(example.contains("[[auth.api_keys]]") && example.contains("0.0.0.0"), "{example}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("roomcontrol.toml"), &example).unwrap();
    let message = failure(dir.path(), &[], &["config"]);
    assert!(message.contains("auth.api_keys[\"backend\"].hash = (not shown) (from "), "{message}");
    assert!(message.contains("roomcontrol api-key"), "the message says how to make a hash: {message}");

    // With a hash of its own, the rest of the example is a working configuration.
    let hash = roomcontrol::auth::hash_api_key(&roomcontrol::auth::new_api_key());
    let filled: String = example
        .lines()
        .map(|line| if line.starts_with("hash = ") { format!("hash = \"{hash}\"\n") } else { format!("{line}\n") })
        .collect();
    std::fs::write(dir.path().join("roomcontrol.toml"), filled).unwrap();
    let config = effective(dir.path(), &[]);
    assert_eq!(config["auth"]["api_keys"][0]["hash"], hash.as_str());
}

/// No document carries a working API key: `rck_` and 32 letters and digits.
#[test]
fn the_documentation_holds_no_api_key() {
    let mut files = vec!["README.md".to_owned()];
    for dir in ["docs", "deploy", "deploy/kubernetes"] {
        for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push(format!("{dir}/{}", path.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    for file in files {
        let text = repository_file(&file);
        for (at, _) in text.match_indices("rck_") {
            let key: String = text[at + 4..].chars().take_while(char::is_ascii_alphanumeric).collect();
            assert!(key.len() < 32, "{file} holds an API key (rck_{}...): use a placeholder", &key[..4]);
        }
    }
}
