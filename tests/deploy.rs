//! What ships for deployment, checked offline with the tools operators run: the container
//! image's Dockerfile, the Kubernetes manifests (rendered by kustomize, validated against the
//! Kubernetes schemas of a pinned version and against ours for the Prometheus Operator
//! objects, locked down, consistent with the config they mount), the compose stack and its
//! load service, the systemd unit, and every shell script. The tools scripts/test.sh
//! installs are required; systemd and a container engine, which it cannot provide, are
//! skipped with a printed reason.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde::Deserialize as _;
use serde_yaml::Value;
use support::Builder;

/// The Kubernetes version whose schemas every rendered object must satisfy.
const KUBERNETES_VERSION: &str = "1.32.0";
/// The kustomize directories under deploy/kubernetes.
const KUSTOMIZATIONS: [&str; 3] = ["base", "overlays/single", "overlays/replicated"];
/// Kinds that run containers.
const WORKLOADS: [&str; 7] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "Pod",
];
/// Where the config is mounted in the pod, and the directory its relative paths resolve in.
const POD_CONFIG: &str = "/etc/poynt-proxy/config.yaml";

// ---- tools ------------------------------------------------------------------------------

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Where scripts/test.sh installs the Python tools (and kubectl when the machine has none).
fn test_tools() -> PathBuf {
    repo("target/test-tools/python")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A command for `program`, from PATH or the test tools, with the test tools' Python
/// packages importable; `None` when neither has it.
fn tool(program: &str) -> Option<Command> {
    let bundled = test_tools().join("bin").join(program);
    let path = if on_path(program) {
        PathBuf::from(program)
    } else if bundled.is_file() {
        bundled
    } else {
        return None;
    };
    let mut python_path = OsString::from(test_tools());
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        python_path.push(":");
        python_path.push(existing);
    }
    let mut command = Command::new(path);
    command.env("PYTHONPATH", python_path);
    Some(command)
}

/// [`tool`] for a program scripts/test.sh installs: its absence is a failure.
fn required(program: &str) -> Command {
    tool(program)
        .unwrap_or_else(|| panic!("{program} is not installed; scripts/test.sh installs it"))
}

/// Runs `command` with `stdin` and returns what it did.
fn output(mut command: Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for the tool")
}

/// Both output streams, for assertions and failure messages.
fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command` and returns its stdout; panics with everything it said unless it exits 0.
fn run_ok(command: Command) -> String {
    let description = format!("{command:?}");
    let out = output(command, "");
    assert!(
        out.status.success(),
        "{description} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `python3 -m module`, with the module installed in the test tools.
fn python_module(module: &str) -> Command {
    let mut probe = required("python3");
    probe.args(["-c", &format!("import {module}")]);
    let found = output(probe, "");
    assert!(
        found.status.success(),
        "the Python module {module} is not installed; scripts/test.sh installs it into {}:\n{}",
        test_tools().display(),
        text(&found)
    );
    let mut python = required("python3");
    python.args(["-m", module]);
    python
}

// ---- YAML -----------------------------------------------------------------------------------

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("YAML: {e}\n{text}"))
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

fn strings(value: &Value) -> Vec<&str> {
    seq(value).iter().map(str_of).collect()
}

/// Every string anywhere in `value`.
fn all_strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Sequence(items) => items.iter().for_each(|v| all_strings(v, out)),
        Value::Mapping(map) => map.values().for_each(|v| all_strings(v, out)),
        Value::Tagged(tagged) => all_strings(&tagged.value, out),
        _ => {}
    }
}

fn port_of(address: &Value) -> u64 {
    let addr: SocketAddr = str_of(address)
        .parse()
        .unwrap_or_else(|_| panic!("expected IP:port; found {address:?}"));
    u64::from(addr.port())
}

fn duration(value: &Value, default: &str) -> Duration {
    humantime::parse_duration(value.as_str().unwrap_or(default))
        .unwrap_or_else(|e| panic!("duration {value:?}: {e}"))
}

// ---- Kubernetes ----------------------------------------------------------------------------

/// `kubectl kustomize deploy/kubernetes/<dir>`, as objects.
fn render(dir: &str) -> Vec<Value> {
    let mut kubectl = required("kubectl");
    kubectl
        .arg("kustomize")
        .arg(repo("deploy/kubernetes").join(dir));
    let objects = yaml_docs(&run_ok(kubectl));
    assert!(!objects.is_empty(), "{dir} renders nothing");
    objects
}

fn kind(object: &Value) -> &str {
    str_of(&object["kind"])
}

fn name(object: &Value) -> &str {
    str_of(&object["metadata"]["name"])
}

fn all<'a>(objects: &'a [Value], kind_: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| kind(o) == kind_)
}

fn one<'a>(objects: &'a [Value], kind_: &str, name_: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind(o) == kind_ && name(o) == name_)
        .unwrap_or_else(|| panic!("no {kind_}/{name_} among the rendered objects"))
}

fn pod_spec(workload: &Value) -> &Value {
    match kind(workload) {
        "Pod" => &workload["spec"],
        "CronJob" => &workload["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &workload["spec"]["template"]["spec"],
    }
}

/// The proxy's Deployment, its one container, and the config its ConfigMap holds.
struct Proxy<'a> {
    pod: &'a Value,
    container: &'a Value,
    config: Value,
}

impl<'a> Proxy<'a> {
    fn of(objects: &'a [Value]) -> Self {
        let deployment = one(objects, "Deployment", "poynt-proxy");
        let pod = pod_spec(deployment);
        let containers = seq(&pod["containers"]);
        assert_eq!(containers.len(), 1, "one container: the proxy");
        let config_map = seq(&pod["volumes"])
            .iter()
            .flat_map(|volume| seq(&volume["projected"]["sources"]))
            .find(|source| !source["configMap"].is_null())
            .map(|source| str_of(&source["configMap"]["name"]))
            .expect("a projected ConfigMap");
        let config = yaml(str_of(
            &one(objects, "ConfigMap", config_map)["data"]["config.yaml"],
        ));
        Self {
            pod,
            container: &containers[0],
            config,
        }
    }

    /// Container port numbers by name.
    fn ports(&self) -> BTreeMap<&'a str, u64> {
        seq(&self.container["ports"])
            .iter()
            .map(|p| (str_of(&p["name"]), p["containerPort"].as_u64().unwrap()))
            .collect()
    }

    /// The paths (under the config's directory) the projected config volume provides.
    fn projected_paths(&self) -> BTreeSet<&'a str> {
        seq(&self.pod["volumes"])
            .iter()
            .flat_map(|volume| seq(&volume["projected"]["sources"]))
            .flat_map(|source| {
                let object = if source["secret"].is_null() {
                    &source["configMap"]
                } else {
                    &source["secret"]
                };
                seq(&object["items"])
                    .iter()
                    .map(|item| str_of(&item["path"]))
            })
            .collect()
    }
}

/// Whether `labels` has every pair of `selector`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
}

#[test]
fn every_rendered_object_validates_against_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    for kustomization in KUSTOMIZATIONS {
        let objects = render(kustomization);
        let (custom, native): (Vec<&Value>, Vec<&Value>) = objects
            .iter()
            .partition(|o| str_of(&o["apiVersion"]).starts_with("monitoring.coreos.com/"));
        let file = dir.path().join("native.yaml");
        let docs: Vec<String> = native
            .iter()
            .map(|o| serde_yaml::to_string(o).unwrap())
            .collect();
        std::fs::write(&file, docs.join("---\n")).unwrap();
        let mut validate = python_module("kubernetes_validate");
        validate
            .args(["--strict", "-k", KUBERNETES_VERSION])
            .arg(&file);
        let out = output(validate, "");
        let said = text(&out);
        assert!(out.status.success(), "{kustomization}:\n{said}");
        assert_eq!(
            said.matches("passed for resource").count(),
            native.len(),
            "{kustomization}: every native object validated:\n{said}"
        );
        assert!(!said.contains("WARN"), "{kustomization}:\n{said}");

        let kinds: BTreeSet<&str> = custom.iter().map(|o| kind(o)).collect();
        assert_eq!(
            kinds,
            BTreeSet::from(["PrometheusRule", "ServiceMonitor"]),
            "{kustomization}"
        );
        let mut validate = required("python3");
        validate.arg(repo("deploy/kubernetes/schemas/validate.py"));
        let docs: Vec<String> = custom
            .iter()
            .map(|o| serde_yaml::to_string(o).unwrap())
            .collect();
        let out = output(validate, &docs.join("---\n"));
        let said = text(&out);
        assert!(out.status.success(), "{kustomization}:\n{said}");
        assert_eq!(
            said.lines().filter(|l| l.starts_with("ok ")).count(),
            custom.len(),
            "{kustomization}:\n{said}"
        );
    }
}

/// The negative control for the test above: a misspelt field fails both validators, so
/// their passing means something.
#[test]
fn the_validators_refuse_a_misspelt_field() {
    let objects = render("base");
    let mut deployment = one(&objects, "Deployment", "poynt-proxy").clone();
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] =
        Value::Bool(true);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deployment.yaml");
    std::fs::write(&file, serde_yaml::to_string(&deployment).unwrap()).unwrap();
    let mut validate = python_module("kubernetes_validate");
    validate
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .arg(&file);
    let out = output(validate, "");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("readOnlyRootFilesytem"),
        "{}",
        text(&out)
    );

    let mut monitor = one(&objects, "ServiceMonitor", "poynt-proxy").clone();
    monitor["spec"]["endpoints"][0]["intervall"] = Value::from("30s");
    let mut validate = required("python3");
    validate.arg(repo("deploy/kubernetes/schemas/validate.py"));
    let out = output(validate, &serde_yaml::to_string(&monitor).unwrap());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("'intervall' was unexpected"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_prometheus_rule_is_the_alert_rules_file() {
    let mut generate = Command::new("bash");
    generate
        .arg(repo("deploy/kubernetes/generate-prometheusrule.sh"))
        .arg("--stdout");
    assert_eq!(
        run_ok(generate),
        read("deploy/kubernetes/base/prometheusrule.yaml"),
        "base/prometheusrule.yaml is out of date: run deploy/kubernetes/generate-prometheusrule.sh"
    );
    let alerts = yaml(&read("deploy/prometheus/alerts.yaml"));
    let dir = tempfile::tempdir().unwrap();
    for kustomization in KUSTOMIZATIONS {
        let objects = render(kustomization);
        let rule = one(&objects, "PrometheusRule", "poynt-proxy");
        assert_eq!(rule["spec"], alerts, "{kustomization}");
        let file = dir.path().join("rules.yaml");
        std::fs::write(&file, serde_yaml::to_string(&rule["spec"]).unwrap()).unwrap();
        let mut promtool = required("promtool");
        promtool.args(["check", "rules"]).arg(&file);
        let said = run_ok(promtool);
        let count = seq(&alerts["groups"][0]["rules"]).len();
        assert!(
            said.contains(&format!("SUCCESS: {count} rules found")),
            "{said}"
        );
    }
}

/// The promtool unit tests of the alert rules, deploy/prometheus/tests/*.yaml, sorted.
fn alert_rule_tests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/prometheus/tests"))
        .expect("deploy/prometheus/tests")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The alerts named in a promtool test case, split by whether it expects them to fire.
fn expected(case: &Value) -> (BTreeSet<&str>, BTreeSet<&str>) {
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for check in seq(&case["alert_rule_test"]) {
        let alert = str_of(&check["alertname"]);
        if seq(&check["exp_alerts"]).is_empty() {
            quiet.insert(alert);
        } else {
            firing.insert(alert);
        }
    }
    (firing, quiet)
}

#[test]
fn promtool_passes_the_alert_rule_tests_which_cover_every_alert_and_the_bad_days() {
    let files = alert_rule_tests();
    let mut promtool = required("promtool");
    promtool.args(["test", "rules"]).args(&files);
    let said = run_ok(promtool);
    assert_eq!(said.matches("SUCCESS").count(), files.len(), "{said}");

    let alerts = yaml(&read("deploy/prometheus/alerts.yaml"));
    let severity: BTreeMap<&str, &str> = seq(&alerts["groups"][0]["rules"])
        .iter()
        .map(|rule| (str_of(&rule["alert"]), str_of(&rule["labels"]["severity"])))
        .collect();
    for (alert, level) in &severity {
        assert!(
            matches!(*level, "page" | "ticket"),
            "{alert}: expected severity page or ticket; found {level:?}"
        );
    }
    let pages: BTreeSet<&str> = severity
        .iter()
        .filter(|(_, level)| **level == "page")
        .map(|(alert, _)| *alert)
        .collect();
    let tests: Vec<Value> = files
        .iter()
        .map(|f| yaml(&std::fs::read_to_string(f).expect("a test file")))
        .collect();
    let cases: BTreeMap<&str, &Value> = tests
        .iter()
        .flat_map(|t| seq(&t["tests"]))
        .map(|case| (str_of(&case["name"]), case))
        .collect();
    let count: usize = tests.iter().map(|t| seq(&t["tests"]).len()).sum();
    assert_eq!(
        cases.len(),
        count,
        "expected every test case named, each name once"
    );

    // Every alert is seen firing and seen quiet, and every alert a test names exists.
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for case in cases.values() {
        let (fires, stays) = expected(case);
        firing.extend(fires);
        quiet.extend(stays);
    }
    let named: Vec<_> = firing
        .union(&quiet)
        .filter(|a| !severity.contains_key(*a))
        .collect();
    assert!(
        named.is_empty(),
        "the tests name alerts alerts.yaml lacks: {named:?}"
    );
    for alert in severity.keys() {
        assert!(
            firing.contains(alert) && quiet.contains(alert),
            "{alert}: expected a firing and a quiet case; found firing {}, quiet {}",
            firing.contains(alert),
            quiet.contains(alert)
        );
    }

    // The days operators live through.
    let case = |name: &str| {
        cases
            .get(name)
            .map(|case| expected(case))
            .unwrap_or_else(|| panic!("no promtool test case named {name:?}"))
    };
    let (fires, stays) = case("one merchant withdrew among many healthy");
    let unchecked: Vec<_> = pages.difference(&stays).collect();
    assert!(
        unchecked.is_empty(),
        "pages not asserted quiet when one merchant withdrew: {unchecked:?}"
    );
    assert!(fires.is_disjoint(&pages), "{fires:?}");
    let (fires, _) = case("Poynt down since start");
    assert!(
        !fires.is_disjoint(&pages),
        "no page fires when Poynt is down since start"
    );
    let (_, stays) = case("Redis restarted and healthy again");
    assert!(stays.contains("PoyntProxyStoreUnreachable"), "{stays:?}");

    // A case that fails fails the run: promtool reads and judges the expectations.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("deploy/prometheus/alerts.yaml"),
        dir.path().join("alerts.yaml"),
    )
    .unwrap();
    let wrong = dir.path().join("wrong.yaml");
    std::fs::write(
        &wrong,
        "rule_files: [alerts.yaml]\ntests:\n  - interval: 1m\n    input_series:\n      - series: 'up{job=\"poynt-proxy\", instance=\"a:9090\"}'\n        values: '1x10'\n    alert_rule_test:\n      - eval_time: 5m\n        alertname: PoyntProxyDown\n        exp_alerts: [{exp_labels: {severity: page}}]\n",
    )
    .unwrap();
    let mut promtool = required("promtool");
    promtool.args(["test", "rules"]).arg(&wrong);
    let out = output(promtool, "");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("FAILED"), "{}", text(&out));
}

#[test]
fn every_container_of_every_workload_runs_locked_down() {
    let mut containers_checked = 0;
    for kustomization in KUSTOMIZATIONS {
        for workload in render(kustomization)
            .iter()
            .filter(|o| WORKLOADS.contains(&kind(o)))
        {
            let pod = pod_spec(workload);
            let pod_security = &pod["securityContext"];
            let what = format!("{kustomization}: {}/{}", kind(workload), name(workload));
            assert_eq!(pod_security["runAsNonRoot"], Value::Bool(true), "{what}");
            assert!(
                pod_security["runAsUser"]
                    .as_u64()
                    .is_some_and(|uid| uid > 0),
                "{what}: a numeric non-root runAsUser"
            );
            assert_eq!(
                pod["automountServiceAccountToken"],
                Value::Bool(false),
                "{what}"
            );
            for container in ["initContainers", "containers", "ephemeralContainers"]
                .iter()
                .flat_map(|list| seq(&pod[*list]))
            {
                let what = format!("{what} container {}", str_of(&container["name"]));
                let security = &container["securityContext"];
                let either = |key: &str| {
                    if security[key].is_null() {
                        pod_security[key].clone()
                    } else {
                        security[key].clone()
                    }
                };
                assert_eq!(either("runAsNonRoot"), Value::Bool(true), "{what}");
                assert_eq!(
                    security["readOnlyRootFilesystem"],
                    Value::Bool(true),
                    "{what}"
                );
                assert_eq!(
                    security["allowPrivilegeEscalation"],
                    Value::Bool(false),
                    "{what}"
                );
                assert_ne!(security["privileged"], Value::Bool(true), "{what}");
                assert_eq!(
                    strings(&security["capabilities"]["drop"]),
                    ["ALL"],
                    "{what}"
                );
                assert!(security["capabilities"]["add"].is_null(), "{what}");
                assert_eq!(
                    str_of(&either("seccompProfile")["type"]),
                    "RuntimeDefault",
                    "{what}"
                );
                for bound in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(
                            !container["resources"][bound][resource].is_null(),
                            "{what}: resources.{bound}.{resource}"
                        );
                    }
                }
                containers_checked += 1;
            }
        }
    }
    assert_eq!(containers_checked, KUSTOMIZATIONS.len(), "one proxy each");
}

#[test]
fn the_deployment_serves_probes_drains_and_mounts_what_its_config_names() {
    for kustomization in KUSTOMIZATIONS {
        let objects = render(kustomization);
        let proxy = Proxy::of(&objects);
        let (container, config) = (proxy.container, &proxy.config);

        assert_eq!(
            strings(&container["args"]),
            ["run", "--config", POD_CONFIG],
            "{kustomization}"
        );
        let config_dir = Path::new(POD_CONFIG).parent().unwrap().to_str().unwrap();
        let mounts: BTreeMap<&str, &Value> = seq(&container["volumeMounts"])
            .iter()
            .map(|m| (str_of(&m["mountPath"]), m))
            .collect();
        assert_eq!(mounts[config_dir]["readOnly"], Value::Bool(true));

        // Every listener the config opens is a named container port, on every interface.
        let ports = proxy.ports();
        let mut expected = BTreeMap::from([
            ("http", port_of(&config["listen"])),
            ("admin", port_of(&config["admin_listen"])),
        ]);
        if !config["onboarding"].is_null() {
            expected.insert("onboarding", port_of(&config["onboarding"]["listen"]));
        }
        assert_eq!(ports, expected, "{kustomization}");
        for listen in [&config["listen"], &config["admin_listen"]] {
            assert!(str_of(listen).starts_with("0.0.0.0:"), "{kustomization}");
        }
        assert!(
            config["admin"]["bearer_token_file"].is_string(),
            "{kustomization}: a non-loopback admin listener needs admin.bearer_token_file"
        );

        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(str_of(&get["path"]), path, "{kustomization}");
            assert_eq!(str_of(&get["port"]), "admin", "{kustomization}");
        }

        // SIGTERM comes after the preStop pause; the drain must end before the SIGKILL.
        let pause = strings(&container["lifecycle"]["preStop"]["exec"]["command"]);
        assert_eq!(pause.len(), 2, "{kustomization}: preStop is `sleep N`");
        assert_eq!(pause[0], "sleep");
        let pause = Duration::from_secs(pause[1].parse().unwrap());
        let grace = duration(&config["server"]["shutdown_grace"], "30s");
        let termination = Duration::from_secs(
            proxy.pod["terminationGracePeriodSeconds"]
                .as_u64()
                .expect("terminationGracePeriodSeconds"),
        );
        assert!(
            termination > pause + grace,
            "{kustomization}: {termination:?} must exceed {pause:?} + {grace:?}"
        );

        // The Secrets the config reads are exactly the ones projected beside it.
        let mut named = Vec::new();
        all_strings(config, &mut named);
        let named: BTreeSet<&str> = named
            .into_iter()
            .filter(|s| s.starts_with("secrets/"))
            .collect();
        let mut projected = proxy.projected_paths();
        assert!(projected.remove("config.yaml"), "{kustomization}");
        assert_eq!(named, projected, "{kustomization}");

        // The embedded store writes under a mounted volume; Redis needs none.
        let store_path = str_of(&config["store"]["path"]);
        match str_of(&config["store"]["backend"]) {
            "embedded" => {
                let dir = Path::new(store_path).parent().unwrap().to_str().unwrap();
                let mount = mounts
                    .get(dir)
                    .unwrap_or_else(|| panic!("{kustomization}: nothing mounted at {dir}"));
                assert_ne!(mount["readOnly"], Value::Bool(true), "{kustomization}");
            }
            "redis" => assert_eq!(mounts.len(), 1, "{kustomization}: only the config"),
            other => panic!("{kustomization}: store.backend {other:?}"),
        }
    }
}

#[test]
fn services_network_policy_and_service_monitor_reach_the_right_ports() {
    let alerts = read("deploy/prometheus/alerts.yaml");
    for kustomization in KUSTOMIZATIONS {
        let objects = render(kustomization);
        let proxy = Proxy::of(&objects);
        let ports = proxy.ports();
        let pod_labels =
            &one(&objects, "Deployment", "poynt-proxy")["spec"]["template"]["metadata"]["labels"];

        let mut targets = BTreeMap::new();
        for service in all(&objects, "Service") {
            assert!(selects(&service["spec"]["selector"], pod_labels));
            assert_eq!(str_of(&service["spec"]["type"]), "ClusterIP");
            for port in seq(&service["spec"]["ports"]) {
                let target = str_of(&port["targetPort"]);
                assert!(ports.contains_key(target), "{kustomization}: {target}");
                targets.insert(name(service), target);
            }
        }
        assert_eq!(targets["poynt-proxy"], "http", "{kustomization}");
        assert_eq!(targets["poynt-proxy-admin"], "admin", "{kustomization}");

        // Prometheus scrapes the admin Service, as the job the alert rules select.
        let monitor = one(&objects, "ServiceMonitor", "poynt-proxy");
        let scraped: Vec<&Value> = all(&objects, "Service")
            .filter(|s| {
                selects(
                    &monitor["spec"]["selector"]["matchLabels"],
                    &s["metadata"]["labels"],
                )
            })
            .collect();
        assert_eq!(
            scraped.len(),
            1,
            "{kustomization}: exactly the admin Service"
        );
        assert_eq!(name(scraped[0]), "poynt-proxy-admin");
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(str_of(&endpoint["path"]), "/metrics");
        assert!(
            seq(&scraped[0]["spec"]["ports"])
                .iter()
                .any(|p| p["name"] == endpoint["port"]),
            "{kustomization}"
        );
        let job = str_of(&scraped[0]["metadata"]["labels"][str_of(&monitor["spec"]["jobLabel"])]);
        assert!(alerts.contains(&format!("job=\"{job}\"")), "job {job:?}");

        // Who may connect to which port.
        let policy = one(&objects, "NetworkPolicy", "poynt-proxy");
        assert!(selects(
            &policy["spec"]["podSelector"]["matchLabels"],
            pod_labels
        ));
        let mut allowed: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for rule in seq(&policy["spec"]["ingress"]) {
            for port in seq(&rule["ports"]) {
                allowed
                    .entry(str_of(&port["port"]))
                    .or_default()
                    .extend(seq(&rule["from"]));
            }
        }
        let callers = &allowed["http"];
        assert_eq!(callers.len(), 1, "{kustomization}");
        assert_eq!(
            str_of(&callers[0]["podSelector"]["matchLabels"]["poynt-proxy/client"]),
            "true"
        );
        let monitoring = &allowed["admin"];
        assert_eq!(monitoring.len(), 1, "{kustomization}");
        assert_eq!(
            str_of(
                &monitoring[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            ),
            "monitoring"
        );
        assert!(monitoring[0]["podSelector"].is_null());
        let expected_ports: BTreeSet<&str> = ports.keys().copied().collect();
        assert_eq!(
            allowed.keys().copied().collect::<BTreeSet<_>>(),
            expected_ports,
            "{kustomization}: a rule per listener, nothing else"
        );
        let egress: BTreeSet<(String, u64)> = seq(&policy["spec"]["egress"])
            .iter()
            .flat_map(|rule| seq(&rule["ports"]))
            .map(|p| {
                (
                    str_of(&p["protocol"]).to_owned(),
                    p["port"].as_u64().unwrap(),
                )
            })
            .collect();
        for needed in [("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6379)] {
            assert!(
                egress.contains(&(needed.0.to_owned(), needed.1)),
                "{kustomization}: egress {needed:?}"
            );
        }
    }
}

#[test]
fn single_owns_its_store_on_a_volume_and_replicated_shares_redis_behind_an_ingress() {
    let base = render("base");
    let hpa = one(&base, "HorizontalPodAutoscaler", "poynt-proxy");
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    assert!(one(&base, "Deployment", "poynt-proxy")["spec"]["replicas"].is_null());

    let single = render("overlays/single");
    let deployment = one(&single, "Deployment", "poynt-proxy");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(1));
    assert_eq!(str_of(&deployment["spec"]["strategy"]["type"]), "Recreate");
    assert_eq!(all(&single, "HorizontalPodAutoscaler").count(), 0);
    let data = seq(&pod_spec(deployment)["volumes"])
        .iter()
        .find(|v| str_of(&v["name"]) == "data")
        .expect("a data volume");
    assert!(data["emptyDir"].is_null());
    let claim = str_of(&data["persistentVolumeClaim"]["claimName"]);
    one(&single, "PersistentVolumeClaim", claim);
    assert_eq!(
        str_of(&Proxy::of(&single).config["store"]["backend"]),
        "embedded"
    );

    let replicated = render("overlays/replicated");
    let hpa = one(&replicated, "HorizontalPodAutoscaler", "poynt-proxy");
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 3);
    assert_eq!(
        str_of(&hpa["spec"]["scaleTargetRef"]["name"]),
        "poynt-proxy"
    );
    let proxy = Proxy::of(&replicated);
    assert_eq!(str_of(&proxy.config["store"]["backend"]), "redis");
    assert!(
        proxy.config["store"]["redis_url"].is_null(),
        "the Redis URL (and its password) stays out of the ConfigMap"
    );
    let redis_url = seq(&proxy.container["env"])
        .iter()
        .find(|e| str_of(&e["name"]) == "POYNT_PROXY_REDIS_URL")
        .expect("POYNT_PROXY_REDIS_URL");
    assert!(redis_url["value"].is_null());
    assert!(!str_of(&redis_url["valueFrom"]["secretKeyRef"]["name"]).is_empty());

    // The Ingress: the onboarding listener's two entry points, on public_url's host.
    let public_url: http::Uri = str_of(&proxy.config["onboarding"]["public_url"])
        .parse()
        .unwrap();
    let ingresses: Vec<&Value> = all(&replicated, "Ingress").collect();
    assert_eq!(ingresses.len(), 1);
    let rules = seq(&ingresses[0]["spec"]["rules"]);
    assert_eq!(rules.len(), 1);
    assert_eq!(Some(str_of(&rules[0]["host"])), public_url.host());
    assert!(
        strings(&ingresses[0]["spec"]["tls"][0]["hosts"]).contains(&public_url.host().unwrap())
    );
    let mut paths = BTreeSet::new();
    for path in seq(&rules[0]["http"]["paths"]) {
        paths.insert((str_of(&path["path"]), str_of(&path["pathType"])));
        let backend = &path["backend"]["service"];
        let service = one(&replicated, "Service", str_of(&backend["name"]));
        let port = seq(&service["spec"]["ports"])
            .iter()
            .find(|p| p["name"] == backend["port"]["name"])
            .expect("the backend port");
        assert_eq!(str_of(&port["targetPort"]), "onboarding");
    }
    assert_eq!(
        paths,
        BTreeSet::from([("/connect", "Prefix"), ("/oauth/callback", "Exact")])
    );
}

// ---- compose --------------------------------------------------------------------------------

/// A compose volume entry: (source, target), from `docker-compose config`'s short syntax.
fn volume(entry: &Value) -> (&str, &str) {
    let mut parts = str_of(entry).split(':');
    (parts.next().unwrap(), parts.next().unwrap())
}

/// Where `path` (inside a container of `service`) lives: (volume source, path inside it).
fn backing(service: &Value, path: &str) -> (String, String) {
    seq(&service["volumes"])
        .iter()
        .map(volume)
        .filter_map(|(source, target)| {
            let rest = Path::new(path).strip_prefix(target).ok()?;
            Some((source.to_owned(), rest.to_str().unwrap().to_owned()))
        })
        .next()
        .unwrap_or_else(|| panic!("no volume holds {path}"))
}

#[test]
fn docker_compose_accepts_the_stack_and_promtool_its_prometheus_config() {
    let compose_file = repo("deploy/compose/compose.yaml");
    let mut compose = required("docker-compose");
    compose.arg("-f").arg(&compose_file).arg("config");
    let stack = yaml(&run_ok(compose));
    let services = &stack["services"];

    // Prometheus: its config and rules as mounted in its container pass promtool.
    let prometheus = &services["prometheus"];
    let root = tempfile::tempdir().unwrap();
    for (source, target) in seq(&prometheus["volumes"]).iter().map(volume) {
        let dest = root.path().join(target.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(source, &dest).unwrap_or_else(|e| panic!("{source}: {e}"));
    }
    let config_file = strings(&prometheus["command"])
        .iter()
        .find_map(|arg| arg.strip_prefix("--config.file="))
        .expect("--config.file")
        .trim_start_matches('/')
        .to_owned();
    let mut promtool = required("promtool");
    promtool
        .args(["check", "config"])
        .arg(root.path().join(&config_file));
    let said = run_ok(promtool);
    let rules = seq(&yaml(&read("deploy/prometheus/alerts.yaml"))["groups"][0]["rules"]).len();
    assert!(
        said.contains(&format!("SUCCESS: {rules} rules found")),
        "the alert rules load:\n{said}"
    );

    // Prometheus scrapes every proxy's admin port, as the job the alerts select.
    let proxy_config = yaml(&read("deploy/compose/proxy.yaml"));
    let admin_port = port_of(&proxy_config["admin_listen"]);
    let proxies: Vec<&str> = services
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, s)| strings(&s["command"]).first() == Some(&"run"))
        .map(|(name, _)| str_of(name))
        .collect();
    assert_eq!(proxies, ["proxy-a", "proxy-b"]);
    let scrape = &yaml(&std::fs::read_to_string(root.path().join(&config_file)).unwrap())["scrape_configs"]
        [0];
    assert_eq!(str_of(&scrape["job_name"]), "poynt-proxy");
    let expected: Vec<String> = proxies
        .iter()
        .map(|p| format!("{p}:{admin_port}"))
        .collect();
    assert_eq!(strings(&scrape["static_configs"][0]["targets"]), expected);

    // Each proxy reads proxy.yaml, reaches the emulator under a name its certificate
    // covers, and finds every file it names where the other services write it.
    let emulator = &services["emulator"];
    let flags: BTreeMap<&str, &str> = strings(&emulator["command"])
        .iter()
        .filter_map(|arg| arg.strip_prefix("--")?.split_once('='))
        .collect();
    let api_url: http::Uri = str_of(&proxy_config["poynt"]["api_url"]).parse().unwrap();
    assert_eq!(api_url.host(), Some(flags["tls-name"]));
    assert!(services[flags["tls-name"]].is_mapping());
    let listen: SocketAddr = flags["listen"].parse().unwrap();
    assert_eq!(api_url.port_u16(), Some(listen.port()));
    assert_eq!(
        flags["app-id"],
        str_of(&proxy_config["poynt"]["application_id"])
    );
    let init = &services["secrets"];
    let init_script = strings(&init["command"]).concat();
    let init_dir = init_script
        .lines()
        .find_map(|l| l.trim().strip_prefix("cd "))
        .expect("the init script's directory");
    let mut produced = BTreeSet::from([
        backing(emulator, flags["ca-out"]),
        backing(emulator, flags["app-private-key-out"]),
    ]);
    for written in init_script.split("> ").skip(1) {
        let file = written.split_whitespace().next().unwrap();
        produced.insert(backing(init, &format!("{init_dir}/{file}")));
    }
    for proxy in &proxies {
        let service = &services[*proxy];
        let (source, _) = backing(service, POD_CONFIG);
        assert_eq!(Path::new(&source), repo("deploy/compose/proxy.yaml"));
        for key in [
            &proxy_config["poynt"]["private_key_file"],
            &proxy_config["poynt"]["ca_file"],
            &proxy_config["store"]["key_file"],
            &proxy_config["admin"]["bearer_token_file"],
        ] {
            let path = Path::new(POD_CONFIG).parent().unwrap().join(str_of(key));
            let found = backing(service, path.to_str().unwrap());
            assert!(
                produced.contains(&found),
                "{proxy}: {path:?} is {found:?}; made: {produced:?}"
            );
        }
    }
    let redis_url: http::Uri = str_of(&proxy_config["store"]["redis_url"]).parse().unwrap();
    assert!(services[redis_url.host().unwrap()].is_mapping());

    // Grafana: the dashboard sits where the provisioned provider reads.
    let grafana = &services["grafana"];
    let (_, dashboard) = seq(&grafana["volumes"])
        .iter()
        .map(volume)
        .find(|(source, _)| Path::new(source) == repo("deploy/grafana/poynt-proxy.json"))
        .expect("the dashboard is mounted");
    let provider = yaml(&read("deploy/compose/grafana/dashboards.yaml"));
    let folder = str_of(&provider["providers"][0]["options"]["path"]);
    assert_eq!(Path::new(dashboard).parent(), Some(Path::new(folder)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_load_service_sends_real_traffic() {
    let harness = Builder::default().merchants(3).start().await;
    let merchants: Vec<String> = harness.merchants.iter().map(ToString::to_string).collect();
    let out = tokio::process::Command::new("sh")
        .arg(repo("deploy/compose/load.sh"))
        .env("PROXIES", harness.proxy.proxy_addr().to_string())
        .env("MERCHANTS", merchants.join(" "))
        .env("UNAUTHORIZED", support::merchant().to_string())
        .env("PAUSE", "0")
        .env("REQUESTS", "100")
        .output()
        .await
        .expect("sh runs load.sh");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every fiftieth request names the merchant that never authorized the app.
    assert_eq!(said.trim(), "load: 100 requests sent, 98 answered 2xx");
    let stats = harness.stats();
    assert_eq!(stats.api_calls, 98);
    assert_eq!(
        stats.token_calls.jwt_bearer.total - stats.token_calls.jwt_bearer.refused,
        3
    );
    harness.stop().await;
}

// ---- systemd ---------------------------------------------------------------------------------

/// The unit's `Key=Value` lines, in order.
fn directives(unit: &str) -> Vec<(&str, &str)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect()
}

#[test]
fn systemd_accepts_the_unit_and_it_hands_the_config_its_credentials() {
    let unit = read("deploy/systemd/poynt-proxy.service");
    let directives = directives(&unit);
    let value = |key: &str| {
        directives
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("the unit sets {key}"))
    };
    for (key, expected) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "poynt-proxy"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(value(key), expected);
    }
    let config = yaml(&read("deploy/systemd/config.yaml"));
    assert!(value("ExecStart").ends_with(" run --config /etc/poynt-proxy/config.yaml"));
    assert!(str_of(&config["store"]["path"]).starts_with("/var/lib/poynt-proxy/"));
    let stop = humantime::parse_duration(value("TimeoutStopSec")).unwrap();
    assert!(stop > duration(&config["server"]["shutdown_grace"], "30s"));

    // Every credential the config reads is loaded, and every one loaded is read.
    let loaded: BTreeSet<&str> = directives
        .iter()
        .filter(|(k, _)| *k == "LoadCredential")
        .map(|(_, v)| v.split_once(':').expect("ID:PATH").0)
        .collect();
    let mut named = Vec::new();
    all_strings(&config, &mut named);
    let read_by_config: BTreeSet<&str> = named
        .iter()
        .filter_map(|s| s.strip_prefix("/run/credentials/poynt-proxy.service/"))
        .collect();
    assert_eq!(loaded, read_by_config);
    assert_eq!(loaded.len(), 3);

    if tool("systemd-analyze").is_none() {
        println!("skipped systemd-analyze: systemd is not installed on this machine");
        return;
    }
    // verify checks that ExecStart's program exists: point it at the binary just built.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("poynt-proxy.service");
    let installed = value("ExecStart").split_whitespace().next().unwrap();
    std::fs::write(&copy, unit.replace(installed, support::process::BIN)).unwrap();
    let mut verify = required("systemd-analyze");
    verify.arg("verify").arg(&copy);
    let out = output(verify, "");
    assert!(out.status.success(), "{}", text(&out));
    // It exits 0 on unknown keys and bad values too, with a warning: there must be none.
    assert_eq!(text(&out).trim(), "", "systemd-analyze verify warns");

    let mut security = required("systemd-analyze");
    security.args(["security", "--offline=yes"]).arg(&copy);
    let said = run_ok(security);
    let exposure: f64 = said
        .lines()
        .find_map(|l| l.split("poynt-proxy.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{said}"));
    assert!(exposure <= 1.5, "exposure {exposure} (0 is best, 10 worst)");
}

// ---- image ------------------------------------------------------------------------------------

/// A Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                let (instruction, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((instruction.to_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

/// `cargo metadata` of the workspace, its dependencies resolved for this machine's target.
fn cargo_metadata() -> serde_json::Value {
    let mut metadata = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    metadata
        .current_dir(repo(""))
        .args([
            "metadata",
            "--locked",
            "--format-version",
            "1",
            "--filter-platform",
        ])
        .arg(format!("{}-unknown-linux-gnu", std::env::consts::ARCH));
    serde_json::from_str(&run_ok(metadata)).unwrap()
}

fn version(text: &str) -> Vec<u64> {
    text.split('.').map(|n| n.parse().unwrap_or(0)).collect()
}

#[test]
fn the_dockerfile_builds_what_ci_builds_and_runs_unprivileged() {
    let steps = instructions(&read("Dockerfile"));
    let stages: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, (i, _))| i == "FROM")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build, runtime) = (&steps[..stages[1]], &steps[stages[1]..]);

    // The build runs exactly the command CI runs: the release build, optimised with the
    // recorded execution profile.
    let command = build
        .iter()
        .filter(|(i, _)| i == "RUN")
        .find_map(|(_, args)| args.find("scripts/release.sh").map(|at| &args[at..]))
        .and_then(|tail| tail.split("&&").next())
        .expect("a RUN with scripts/release.sh")
        .trim();
    assert_eq!(command, "scripts/release.sh");
    let release = read(command);
    assert!(
        release.contains("cargo build --release --locked")
            && release.contains("-Cprofile-use=$profile")
            && release.contains("profile=$root/benches/pgo/poynt-proxy.profdata"),
        "{command} must build the locked release with the profile in benches/pgo"
    );
    assert!(
        repo("benches/pgo/poynt-proxy.profdata").is_file(),
        "the execution profile the release build uses is missing (benches/pgo/train.sh records it)"
    );
    // CI runs it in the background beside the other steps, before it sets the lint build's
    // compiler and flags, so that what it builds is what the image builds.
    let words: Vec<&str> = command.split_whitespace().collect();
    let ci = read(".ci/run");
    let lines: Vec<&str> = ci.lines().filter(|l| !l.trim().starts_with('#')).collect();
    let runs = |l: &str| {
        let tokens: Vec<&str> = l
            .split(|c: char| c.is_whitespace() || "();&|".contains(c))
            .filter(|t| !t.is_empty())
            .collect();
        tokens.windows(words.len()).any(|w| w == words)
    };
    let build_at = lines.iter().position(|l| runs(l));
    assert!(
        build_at.is_some(),
        ".ci/run must run the image's build command {command:?}"
    );
    let flags_at = lines
        .iter()
        .position(|l| l.contains("RUSTFLAGS") || l.contains("RUSTC_WORKSPACE_WRAPPER"));
    assert!(
        flags_at.is_none_or(|at| build_at < Some(at)),
        ".ci/run must start {command:?} before it sets RUSTFLAGS or a compiler wrapper"
    );

    // The Rust image is at least every locked crate's rust-version.
    let image = build[0].1.split_whitespace().next().unwrap();
    let rust = image
        .strip_prefix("rust:")
        .and_then(|tag| tag.split('-').next())
        .expect("the official Rust image, pinned");
    let metadata = cargo_metadata();
    for package in metadata["packages"].as_array().unwrap() {
        if let Some(needed) = package["rust_version"].as_str() {
            assert!(
                version(rust) >= version(needed),
                "{image} is older than {} needs ({needed})",
                package["name"]
            );
        }
    }

    // The runtime: minimal, non-root, the documented entry point, /data the volume.
    let from = runtime[0].1.as_str();
    assert!(
        from.starts_with("debian:") && from.ends_with("-slim")
            || from.starts_with("gcr.io/distroless/cc"),
        "{from}"
    );
    let last = |instruction: &str| {
        runtime
            .iter()
            .rev()
            .find(|(i, _)| i == instruction)
            .map(|(_, args)| args.as_str())
            .unwrap_or_else(|| panic!("the runtime stage has no {instruction}"))
    };
    let uid: u32 = last("USER")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric USER");
    assert_ne!(uid, 0);
    let json = |text: &str| serde_json::from_str::<Vec<String>>(text).unwrap();
    assert_eq!(json(last("ENTRYPOINT")), ["poynt-proxy"]);
    assert_eq!(
        json(last("CMD")),
        ["run", "--config", "/etc/poynt-proxy/config.yaml"]
    );
    assert_eq!(json(last("VOLUME")), ["/data"]);
    let copies: Vec<&str> = runtime
        .iter()
        .filter(|(i, _)| i == "COPY")
        .map(|(_, args)| args.as_str())
        .collect();
    assert!(copies.contains(&"deploy/image/config.yaml /etc/poynt-proxy/config.yaml"));
    assert!(
        copies
            .iter()
            .any(|c| c.ends_with(" /usr/local/bin/poynt-proxy"))
    );
    assert!(copies.iter().any(|c| c.contains("ca-certificates")));

    // The build context holds what the build reads.
    let ignore = read(".dockerignore");
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src/",
        "crates/",
        "benches/",
        "config/",
        "deploy/image/",
        "scripts/release.sh",
    ] {
        assert!(
            ignore.lines().any(|l| l == format!("!{needed}")),
            ".dockerignore: {needed}"
        );
    }

    // The default config listens beyond the container and writes only under /data.
    let config = yaml(&read("deploy/image/config.yaml"));
    for key in ["listen", "admin_listen"] {
        assert!(str_of(&config[key]).starts_with("0.0.0.0:"), "{key}");
    }
    assert!(config["admin"]["bearer_token_file"].is_string());
    assert_eq!(str_of(&config["store"]["backend"]), "embedded");
    assert!(str_of(&config["store"]["path"]).starts_with("/data/"));
}

/// The crates that run only inside the compiler (proc macros, build scripts, and what only
/// they use) are exactly those `Cargo.toml` compiles at opt-level 0 in test builds: one left
/// off is optimised for nothing (minutes of a cold CI build), and a crate the tests run, if
/// named there, would run unoptimised. Cargo offers no wildcard for them, so the list is
/// kept by hand and checked here against the resolved dependency graph.
#[test]
fn the_crates_compiled_unoptimised_are_exactly_those_only_the_compiler_runs() {
    let metadata = cargo_metadata();
    let id = |value: &serde_json::Value| value.as_str().unwrap().to_owned();
    let packages: BTreeMap<String, &serde_json::Value> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| (id(&package["id"]), package))
        .collect();
    let nodes: BTreeMap<String, &serde_json::Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| (id(&node["id"]), node))
        .collect();
    let proc_macro = |package: &str| {
        packages[package]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|target| {
                target["kind"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k == "proc-macro")
            })
    };
    // (package, dependency kind) for each edge out of `package`.
    let edges = |package: &str| -> Vec<(String, Option<String>)> {
        nodes[package]["deps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|dep| {
                dep["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|kind| (id(&dep["pkg"]), kind["kind"].as_str().map(str::to_owned)))
            })
            .collect()
    };
    // What the tests and the binaries run: the members, their normal and (for members) dev
    // dependencies, transitively; proc macros and build dependencies go to the host side.
    let (mut target, mut host) = (BTreeSet::new(), BTreeSet::new());
    let mut to_target: Vec<(String, bool)> = metadata["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| (id(member), true))
        .collect();
    let mut to_host = Vec::new();
    while let Some((package, member)) = to_target.pop() {
        if !target.insert(package.clone()) {
            continue;
        }
        for (dep, kind) in edges(&package) {
            let runs = kind.is_none() || member && kind.as_deref() == Some("dev");
            if kind.as_deref() == Some("build") || runs && proc_macro(&dep) {
                to_host.push(dep);
            } else if runs {
                to_target.push((dep, false));
            }
        }
    }
    while let Some(package) = to_host.pop() {
        if host.insert(package.clone()) {
            to_host.extend(
                edges(&package)
                    .into_iter()
                    .filter(|(_, kind)| kind.as_deref() != Some("dev"))
                    .map(|(dep, _)| dep),
            );
        }
    }
    let name = |package: &String| packages[package]["name"].as_str().unwrap().to_owned();
    let target: BTreeSet<String> = target.iter().map(name).collect();
    let host_only: BTreeSet<String> = host
        .iter()
        .map(name)
        .filter(|n| !target.contains(n))
        .collect();

    let manifest = read("Cargo.toml");
    let listed: BTreeSet<String> = manifest
        .lines()
        .skip_while(|line| line.trim() != "[profile.dev.package]")
        .skip(1)
        .take_while(|line| !line.starts_with('['))
        .filter_map(|line| line.split_once(".opt-level"))
        .filter(|(_, level)| level.trim_start_matches([' ', '=']).trim() == "0")
        .map(|(crate_name, _)| crate_name.trim().to_owned())
        .collect();
    assert!(
        !host_only.is_empty(),
        "no proc macro or build dependency found"
    );
    let missing: Vec<_> = host_only.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&host_only).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "expected [profile.dev.package] in Cargo.toml to name at opt-level 0 exactly the \
         crates only the compiler runs; found these of them missing: {missing:?}, and these \
         named that the tests run or that are no dependency: {extra:?}"
    );
}

/// A step that fails ends `.ci/run`, and with it the steps it runs in the background (the
/// test tools' install and the release build): left running, they would outlive CI. The
/// real script runs with stand-ins for `cargo` and `scripts/test.sh`: each background
/// stand-in holds a FIFO open until it is ended, so the FIFO's end of file is the moment the
/// last of them ended; the first foreground step (`cargo fmt`) fails once both have begun.
#[test]
fn a_failed_ci_step_ends_the_background_steps() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for sub in [".ci", "scripts", "bin", "pids", "benches/pgo"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    // The real CI script and release build; cargo and the test command are stand-ins.
    for real in [".ci/run", "scripts/release.sh"] {
        std::fs::copy(repo(real), root.join(real)).unwrap();
    }
    std::fs::write(root.join("benches/pgo/poynt-proxy.profdata"), "").unwrap();
    let (held, begun) = (root.join("held"), root.join("begun"));
    let mut mkfifo = Command::new("mkfifo");
    mkfifo.arg(&held).arg(&begun);
    run_ok(mkfifo);
    // A background stand-in: holds `held`, says it has begun, and waits to be ended.
    let hold = r#"exec 9>"$HELD"; echo $$ >"$PIDS/$1"; echo "$1" >"$BEGUN"; exec sleep 600"#;
    // The failing step waits (a minute at most) for both background steps to begin.
    let cargo = format!(
        "#!/bin/bash\ncase \"$*\" in\n*--release*) set -- release; {hold} ;;\n\
         fmt*) exec 8<>\"$BEGUN\"; read -r -t 60 first <&8; read -r -t 60 second <&8; exit 1 ;;\n\
         *) exit 0 ;;\nesac\n"
    );
    for (path, script) in [
        ("bin/cargo", cargo),
        (
            "scripts/test.sh",
            format!("#!/bin/sh\nset -- deps\n{hold}\n"),
        ),
    ] {
        let path = root.join(path);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    // The end of file of `held`: every background stand-in has ended.
    let (ended, ended_rx) = std::sync::mpsc::channel();
    let reader = held.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let read = std::fs::File::open(&reader).and_then(|mut f| {
            use std::io::Read as _;
            f.read_to_end(&mut sink)
        });
        let _ = ended.send(read.map(|_| ()));
    });
    let mut path = OsString::from(root.join("bin"));
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let mut ci = Command::new("bash");
    ci.arg(root.join(".ci/run"))
        .current_dir(root)
        .env("PATH", path)
        .env("HELD", &held)
        .env("BEGUN", &begun)
        .env("PIDS", root.join("pids"));
    let out = output(ci, "");
    let said = text(&out);
    let ended = ended_rx.recv_timeout(Duration::from_secs(60));
    // Whatever the outcome, nothing of this test is left running.
    for job in ["deps", "release"] {
        if let Ok(pid) = std::fs::read_to_string(root.join("pids").join(job)) {
            let _ = Command::new("kill")
                .args(["-9", pid.trim()])
                .stderr(Stdio::null())
                .status();
        }
    }
    assert!(!out.status.success(), "CI passed a failed step:\n{said}");
    for job in ["deps", "release"] {
        assert!(
            root.join("pids").join(job).exists(),
            "expected the {job} step to have begun in the background:\n{said}"
        );
    }
    assert!(
        matches!(ended, Ok(Ok(()))),
        "expected the background steps to end with CI, found them running a minute later \
         ({ended:?}):\n{said}"
    );
}

#[test]
fn the_image_builds_and_checks_its_config_where_an_engine_can_pull() {
    let Some(mut info) = tool("docker") else {
        println!("skipped building the image: no docker client on this machine");
        return;
    };
    info.args(["info", "--format", "{{.ServerVersion}}"]);
    let out = output(info, "");
    if !out.status.success() {
        println!(
            "skipped building the image: no container engine answers here ({}); the Dockerfile's contents are checked instead",
            text(&out)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("docker info failed")
        );
        return;
    }
    let steps = instructions(&read("Dockerfile"));
    for (_, from) in steps.iter().filter(|(i, _)| i == "FROM") {
        let image = from.split_whitespace().next().unwrap();
        let mut pull = required("docker");
        pull.args(["pull", "--quiet", image]);
        let out = output(pull, "");
        if !out.status.success() {
            println!(
                "skipped building the image: the engine cannot pull {image} ({})",
                text(&out).trim()
            );
            return;
        }
    }
    let tag = "poynt-proxy:deploy-test";
    let mut build = required("docker");
    build.args(["build", "--quiet", "-t", tag]).arg(repo(""));
    run_ok(build);
    let secrets = tempfile::tempdir().unwrap();
    std::fs::copy(
        support::fixture("app-key-pkcs8.pem"),
        secrets.path().join("app-key.pem"),
    )
    .unwrap();
    std::fs::write(
        secrets.path().join("admin-bearer"),
        "an-admin-secret-for-the-test",
    )
    .unwrap();
    // The image's user is not root: let it read the files.
    run_ok({
        let mut chmod = Command::new("chmod");
        chmod.arg("-R").arg("a+rX").arg(secrets.path());
        chmod
    });
    let mut check = required("docker");
    check
        .args(["run", "--rm", "--read-only", "--network=none", "-v"])
        .arg(format!(
            "{}:/etc/poynt-proxy/secrets:ro",
            secrets.path().display()
        ))
        .args([tag, "check", "--config", "/etc/poynt-proxy/config.yaml"]);
    let said = run_ok(check);
    assert!(said.contains(": ok"), "{said}");
    let mut remove = required("docker");
    remove.args(["image", "rm", tag]);
    run_ok(remove);
}

// ---- shell scripts ----------------------------------------------------------------------------

/// Whether `path` is a shell script: a .sh name or a shell shebang.
fn is_shell_script(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "sh") {
        return true;
    }
    let Ok(text) = std::fs::read(path) else {
        return false;
    };
    let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    first.starts_with("#!")
        && first
            .split(|c: char| c == '/' || c.is_whitespace())
            .any(|word| matches!(word, "sh" | "bash" | "dash"))
}

/// Every file under `dir` that `keep` selects, outside build and VCS directories.
fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if !matches!(name.as_ref(), "target" | ".git" | "node_modules") {
                files_under(&path, keep, out);
            }
        } else if keep(&path) {
            out.push(path);
        }
    }
}

#[test]
fn shellcheck_passes_on_every_shell_script() {
    let mut scripts = Vec::new();
    files_under(&repo(""), &is_shell_script, &mut scripts);
    for known in [
        "scripts/test.sh",
        ".ci/run",
        "benches/load/run.sh",
        "deploy/compose/load.sh",
        "deploy/kubernetes/generate-prometheusrule.sh",
    ] {
        assert!(
            scripts.contains(&repo(known)),
            "{known} not found among {scripts:?}"
        );
    }
    let mut shellcheck = required("shellcheck");
    shellcheck.args(&scripts);
    run_ok(shellcheck);
}

// ---- every shipped proxy config starts ----------------------------------------------------------

/// Moves every absolute path in `value` under `root`, as if `root` were the filesystem's.
fn reroot(value: &mut Value, root: &Path) {
    match value {
        Value::String(s) if s.starts_with('/') => {
            *s = root.join(&s[1..]).to_str().unwrap().to_owned();
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| reroot(v, root)),
        Value::Mapping(map) => map.values_mut().for_each(|v| reroot(v, root)),
        _ => {}
    }
}

/// Runs the real `poynt-proxy check` on `config_text`, installed at [`POD_CONFIG`] under a
/// temporary root with every file it names made (keys, CA, secrets), in an environment
/// holding only `env` of the proxy's variables.
fn check(what: &str, config_text: &str, env: &[(&str, &str)]) {
    use base64::Engine as _;
    let root = tempfile::tempdir().unwrap();
    let mut config = yaml(config_text);
    reroot(&mut config, root.path());
    let config_path = root.path().join(POD_CONFIG.trim_start_matches('/'));
    let base = config_path.parent().unwrap().to_owned();
    let app_key = std::fs::read_to_string(support::fixture("app-key-pkcs8.pem")).unwrap();
    let public_key = std::fs::read_to_string(support::fixture("app-key-public.pem")).unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .unwrap()
        .cert
        .pem();
    let store_key = || base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let mut files = vec![
        (&config["poynt"]["private_key_file"], app_key),
        (&config["poynt"]["ca_file"], ca),
        (&config["store"]["key_file"], store_key()),
        (
            &config["admin"]["bearer_token_file"],
            "an-admin-bearer-secret-for-the-test".to_owned(),
        ),
    ];
    files.extend(
        seq(&config["store"]["previous_key_files"])
            .iter()
            .map(|path| (path, store_key())),
    );
    if str_of(&config["onboarding"]["code_key"]) != "tls" {
        files.push((&config["onboarding"]["code_key"], public_key));
    }
    let mut dirs = vec![base.clone()];
    if let Some(store) = config["store"]["path"].as_str() {
        dirs.push(base.join(store).parent().unwrap().to_owned());
    }
    for (path, content) in files {
        if let Some(path) = path.as_str() {
            let path = base.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
        }
    }
    for dir in dirs {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();

    let mut command = Command::new(support::process::BIN);
    command.arg("check").arg("--config").arg(&config_path);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("POYNT_PROXY_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    let out = output(command, "");
    assert!(
        out.status.success(),
        "{what}: check failed:\n{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(": ok"),
        "{what}: {}",
        text(&out)
    );
}

#[test]
fn every_shipped_proxy_config_passes_check() {
    check("image default", &read("deploy/image/config.yaml"), &[]);
    for kustomization in KUSTOMIZATIONS {
        let objects = render(kustomization);
        let proxy = Proxy::of(&objects);
        let redis_secret = seq(&proxy.container["env"])
            .iter()
            .any(|e| str_of(&e["name"]) == "POYNT_PROXY_REDIS_URL");
        let env: &[(&str, &str)] = if redis_secret {
            &[("POYNT_PROXY_REDIS_URL", "redis://127.0.0.1:6379/0")]
        } else {
            &[]
        };
        check(
            kustomization,
            &serde_yaml::to_string(&proxy.config).unwrap(),
            env,
        );
    }
    check("compose", &read("deploy/compose/proxy.yaml"), &[]);
    check("systemd", &read("deploy/systemd/config.yaml"), &[]);
}

/// The names of the Secrets `value` refers to: projected or volume Secrets, `secretKeyRef`s
/// and TLS `secretName`s.
fn secret_names<'a>(value: &'a Value, out: &mut BTreeSet<&'a str>) {
    match value {
        Value::Mapping(map) => {
            for (key, item) in map {
                match key.as_str() {
                    Some("secret" | "secretKeyRef") => {
                        if let Some(name) = item["name"].as_str() {
                            out.insert(name);
                        }
                    }
                    Some("secretName") => {
                        if let Some(name) = item.as_str() {
                            out.insert(name);
                        }
                    }
                    _ => {}
                }
                secret_names(item, out);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|item| secret_names(item, out)),
        _ => {}
    }
}

#[test]
fn the_readme_creates_every_secret_the_manifests_use_and_its_redis_port_is_let_out() {
    let readme = read("README.md");
    let created: BTreeSet<&str> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("kubectl create secret "))
        .filter_map(|rest| rest.split_whitespace().nth(1))
        .collect();
    for kustomization in KUSTOMIZATIONS {
        let objects = render(kustomization);
        let mut used = BTreeSet::new();
        objects.iter().for_each(|o| secret_names(o, &mut used));
        let missing: Vec<_> = used.difference(&created).collect();
        assert!(
            missing.is_empty(),
            "{kustomization}: the README does not create {missing:?}"
        );
    }
    let redis_line = readme
        .lines()
        .find(|line| line.contains("create secret generic poynt-proxy-redis"))
        .expect("the README creates the Redis URL secret");
    let port: u64 = redis_line
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split(['/', '\'']).next())
        .and_then(|host| host.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("a host:port in {redis_line:?}"));
    let objects = render("overlays/replicated");
    let policy = one(&objects, "NetworkPolicy", "poynt-proxy");
    let let_out = seq(&policy["spec"]["egress"])
        .iter()
        .flat_map(|rule| seq(&rule["ports"]))
        .any(|p| str_of(&p["protocol"]) == "TCP" && p["port"].as_u64() == Some(port));
    assert!(
        let_out,
        "the NetworkPolicy does not let out the README's Redis port {port}"
    );
}

#[test]
fn no_deploy_artefact_sets_rust_log_which_would_override_log_level() {
    let mut files = vec![repo("Dockerfile")];
    files_under(&repo("deploy"), &|_| true, &mut files);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let sets = ["RUST_LOG=", "RUST_LOG:", "name: RUST_LOG"];
        assert!(
            !sets.iter().any(|setting| text.contains(setting)),
            "{} sets RUST_LOG: a reload of log.level would change nothing",
            path.display()
        );
    }
}
