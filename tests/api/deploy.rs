//! The manifests in `deploy/` against what the server actually registers and
//! reads: the probes' port and health service names, the Service's and the
//! image's port, and the ConfigMap's `roomcontrol.toml` through RoomControl's
//! own configuration loader and binary. Schemas are scripts/validate-deploy's
//! job; this is what a schema cannot know.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use roomcontrol::config::{Config, ConfigFile};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use yaml_rust2::{Yaml, YamlLoader};

use crate::process::roomcontrol;
use crate::support::{SERVICE_NAME, spawn_app};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// Every document of every `deploy/kubernetes/*.yaml`, examples included.
fn manifests() -> Vec<Yaml> {
    let dir = Path::new(DEPLOY).join("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            YamlLoader::load_from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        })
        .collect()
}

/// The one resource of `kind` in the manifests.
fn the(kind: &str) -> Yaml {
    let mut found: Vec<Yaml> = manifests().into_iter().filter(|doc| doc["kind"].as_str() == Some(kind)).collect();
    assert_eq!(found.len(), 1, "exactly one {kind} in deploy/kubernetes");
    found.remove(0)
}

/// The Deployment's RoomControl container.
fn container() -> Yaml {
    let deployment = the("Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_vec().expect("containers").clone();
    assert_eq!(containers.len(), 1, "one container: RoomControl, no sidecar");
    containers[0].clone()
}

/// The port RoomControl listens on in the pod: the container port named grpc.
fn container_port() -> i64 {
    let ports = container()["ports"].as_vec().expect("container ports").clone();
    let grpc = ports.iter().find(|port| port["name"].as_str() == Some("grpc")).expect("a container port named grpc");
    grpc["containerPort"].as_i64().expect("a numeric containerPort")
}

/// The ConfigMap's `roomcontrol.toml`, written where RoomControl can read it.
fn configmap_file() -> (tempfile::TempDir, PathBuf) {
    let configmap = the("ConfigMap");
    let toml = configmap["data"]["roomcontrol.toml"].as_str().expect("the ConfigMap holds roomcontrol.toml");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roomcontrol.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

/// The ConfigMap's configuration as RoomControl's own loader reads it: an
/// unknown key or a bad value fails here as it would at start-up.
fn configmap_config() -> Config {
    let (_dir, path) = configmap_file();
    Config::load(&ConfigFile::Explicit(path))
        .unwrap_or_else(|error| panic!("RoomControl refuses the ConfigMap's roomcontrol.toml: {error}"))
}

/// `ENV` and `EXPOSE` of deploy/Dockerfile, continuation lines joined.
fn dockerfile() -> (BTreeMap<String, String>, Vec<i64>) {
    let text = std::fs::read_to_string(Path::new(DEPLOY).join("Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let mut env = BTreeMap::new();
    let mut exposed = Vec::new();
    for line in joined.lines().map(str::trim) {
        if let Some(pairs) = line.strip_prefix("ENV ") {
            for pair in pairs.split_whitespace() {
                let (key, value) = pair.split_once('=').expect("ENV KEY=VALUE pairs");
                env.insert(key.to_owned(), value.trim_matches('"').to_owned());
            }
        } else if let Some(ports) = line.strip_prefix("EXPOSE ") {
            exposed.extend(ports.split_whitespace().map(|port| port.trim_end_matches("/tcp").parse::<i64>().unwrap()));
        }
    }
    (env, exposed)
}

fn probe_service(probe: &str) -> Option<String> {
    let grpc = &container()[probe]["grpc"];
    assert!(!grpc.is_badvalue(), "the {probe} is a native gRPC probe");
    grpc["service"].as_str().map(str::to_owned)
}

#[test]
fn the_probes_the_service_the_image_and_the_config_file_all_use_the_port_roomcontrol_listens_on() {
    let port = container_port();
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(container()[probe]["grpc"]["port"].as_i64(), Some(port), "{probe} port");
    }

    let service = the("Service");
    let ports = service["spec"]["ports"].as_vec().expect("Service ports").clone();
    let grpc = ports.iter().find(|p| p["name"].as_str() == Some("grpc")).expect("a Service port named grpc");
    let target = match &grpc["targetPort"] {
        Yaml::Integer(number) => *number,
        Yaml::String(name) => {
            assert_eq!(name, "grpc", "targetPort names the container port");
            port
        }
        other => panic!("targetPort: {other:?}"),
    };
    assert_eq!(target, port, "the Service's targetPort");
    assert_eq!(grpc["appProtocol"].as_str(), Some("kubernetes.io/h2c"), "gRPC is HTTP/2 without TLS");

    assert_eq!(i64::from(configmap_config().server.port), port, "server.port in the ConfigMap (or its default)");
    assert!(dockerfile().1.contains(&port), "deploy/Dockerfile EXPOSEs {port}");
}

#[test]
fn readiness_and_startup_ask_for_roomcontrol_and_liveness_for_the_process_alone() {
    assert_eq!(probe_service("startupProbe").as_deref(), Some(SERVICE_NAME));
    assert_eq!(probe_service("readinessProbe").as_deref(), Some(SERVICE_NAME));
    assert_eq!(
        probe_service("livenessProbe").unwrap_or_default(),
        "",
        "liveness asks about the process (the empty name), so a LiveKit outage never restarts pods"
    );
}

#[tokio::test]
async fn the_server_answers_every_health_name_the_probes_ask_for() {
    let app = spawn_app().await;
    let mut names: Vec<String> = ["startupProbe", "readinessProbe", "livenessProbe"]
        .into_iter()
        .map(|probe| probe_service(probe).unwrap_or_default())
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let reply = app.health.clone().check(HealthCheckRequest { service: name.clone() }).await;
        // NOT_FOUND would fail the probe forever, whatever the pod's state.
        let status = reply.unwrap_or_else(|status| panic!("health Check({name:?}): {status:?}")).into_inner().status;
        let status = ServingStatus::try_from(status).unwrap();
        assert!(
            matches!(status, ServingStatus::Serving | ServingStatus::NotServing),
            "health Check({name:?}) reports the service's state, got {status:?}"
        );
    }
}

#[test]
fn the_configmaps_roomcontrol_toml_passes_roomcontrols_own_loader_and_is_what_the_pod_reads() {
    let config = configmap_config();
    assert!(config.server.host.is_unspecified(), "listens on every interface, got {}", config.server.host);

    let deployment = the("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let env = container()["env"].as_vec().expect("env").clone();
    let config_path = env
        .iter()
        .find(|var| var["name"].as_str() == Some("ROOMCONTROL_CONFIG"))
        .and_then(|var| var["value"].as_str())
        .expect("ROOMCONTROL_CONFIG names the file")
        .to_owned();
    let mount = container()["volumeMounts"]
        .as_vec()
        .expect("volumeMounts")
        .iter()
        .find(|mount| config_path.starts_with(&format!("{}/", mount["mountPath"].as_str().unwrap())))
        .expect("ROOMCONTROL_CONFIG lies in a mounted volume")
        .clone();
    assert_eq!(mount["readOnly"].as_bool(), Some(true), "the config volume is mounted read-only");
    let volume = pod["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|volume| volume["name"] == mount["name"])
        .expect("the mounted volume")
        .clone();
    assert_eq!(volume["configMap"]["name"], the("ConfigMap")["metadata"]["name"], "the volume is the ConfigMap");
    let file_name = Path::new(&config_path).file_name().unwrap().to_str().unwrap();
    let item = volume["configMap"]["items"]
        .as_vec()
        .expect("the volume names its item")
        .iter()
        .find(|item| item["path"].as_str() == Some(file_name))
        .expect("the file ROOMCONTROL_CONFIG names")
        .clone();
    assert_eq!(item["key"].as_str(), Some("roomcontrol.toml"));
}

#[test]
fn the_binary_starts_from_the_pods_environment_image_configmap_and_secret_together() {
    let (dir, path) = configmap_file();
    // The pod's environment: the image's ENV, then the Deployment's env, with
    // the example Secret's values where the real Secret's would be.
    let secret = the("Secret");
    let mut env: BTreeMap<String, String> = dockerfile().0;
    for var in container()["env"].as_vec().expect("env") {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = match (var["value"].as_str(), &var["valueFrom"]["secretKeyRef"]) {
            (Some(value), _) => value.to_owned(),
            (None, reference) if !reference.is_badvalue() => {
                assert_eq!(reference["name"], secret["metadata"]["name"], "{name} comes from the example's Secret");
                let key = reference["key"].as_str().unwrap();
                secret["stringData"][key].as_str().unwrap_or_else(|| panic!("the example Secret has {key}")).to_owned()
            }
            _ => panic!("{name}: a value or a secretKeyRef"),
        };
        env.insert(name, value);
    }
    env.insert("ROOMCONTROL_CONFIG".into(), path.to_str().unwrap().into());
    let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();

    let output = roomcontrol(dir.path(), &env, &["config"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "roomcontrol refuses the pod's configuration: {stderr}");
    let effective: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(effective["server"]["host"], "0.0.0.0");
    assert_eq!(effective["server"]["port"].as_i64(), Some(container_port()));
    assert_eq!(effective["log"]["format"], "json");
    assert_eq!(effective["livekit"]["api_key"].as_str(), secret["stringData"]["api-key"].as_str(), "from the Secret");

    // Service links would add ROOMCONTROL_SERVICE_HOST, ROOMCONTROL_PORT...
    // for the `roomcontrol` Service, and RoomControl refuses unknown
    // ROOMCONTROL_* keys.
    assert_eq!(the("Deployment")["spec"]["template"]["spec"]["enableServiceLinks"].as_bool(), Some(false));
}

#[test]
fn kubernetes_waits_longer_than_the_drain_before_killing_a_pod() {
    let config = configmap_config();
    let grace = config.server.drain_delay + config.server.grace_period;
    let deployment = the("Deployment");
    let termination = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds is set");
    assert!(
        u64::try_from(termination).unwrap() > grace.as_secs(),
        "terminationGracePeriodSeconds {termination} must exceed server.drain_delay + server.grace_period ({grace:?}), or SIGKILL cuts the drain"
    );
}

#[tokio::test]
async fn the_configmaps_configuration_starts_a_server() {
    // Off loopback RoomControl refuses to start without authentication:
    // the shipped configuration must carry some.
    let mut config = configmap_config();
    config.server.port = 0;
    config.admin.port = 0;
    config.livekit.url = "http://127.0.0.1:9".to_owned();
    // The pods' store is PostgreSQL (DATABASE_URL from the Secret).
    config.store.url = "sqlite::memory:".to_owned();
    let application = roomcontrol::Application::build(config).await.expect("the ConfigMap's configuration starts");
    assert!(application.admin_addr().is_some(), "the metrics port is on");
}
