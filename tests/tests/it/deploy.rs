//! The deployment files (`deploy/`): the image definition and the Kubernetes manifests.
//!
//! - Every manifest is valid against the Kubernetes OpenAPI schemas, strictly (unknown
//!   fields refused), checked by `kubernetes-validate` (pinned in
//!   `tests/deploy/requirements.txt`, installed by `cargo xtask upstreams`).
//! - The gateway config embedded in the ConfigMap loads with [`portcullis::config::load_str`],
//!   and every path it names is where the Deployment mounts it: the config file, the providers
//!   directory (and each component in the providers ConfigMap), each `file://` secret in the
//!   Secret's volume and each `env://` secret in a `secretKeyRef` variable.
//! - The Dockerfile builds what exists: the paths it copies from the repository, the package
//!   and binary names, the toolchain, the user and port the Deployment relies on. No image is
//!   built unless `PORTCULLIS_BUILD_IMAGE=1` and a container engine answers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis::secret::SecretRef;
use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

fn kube_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(file: &str) -> Value {
    let path = kube_dir().join(file);
    serde_yaml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `value[key]…` as a string (panics naming the path when absent or not a string).
fn string<'v>(value: &'v Value, path: &[&str]) -> &'v str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{}` is not a string", path.join(".")))
}

fn at<'v>(value: &'v Value, path: &[&str]) -> &'v Value {
    path.iter().fold(value, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!("no `{}` in the manifest", path.join(".")))
    })
}

fn seq<'v>(value: &'v Value, path: &[&str]) -> &'v [Value] {
    at(value, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("`{}` is not a list", path.join(".")))
}

/// The `*.yaml` files of `deploy/kubernetes/` that are Kubernetes objects (all but
/// `kustomization.yaml`), sorted.
fn manifests() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(kube_dir())
        .expect("deploy/kubernetes/")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    files.sort();
    files
}

/// Runs the pinned `kubernetes-validate`; `None` (printing why) when xtask could not
/// install it.
fn kubernetes_validate() -> Option<PathBuf> {
    portcullis_tests::differential::installed(
        &root().join("target/deploy/venv/bin/kubernetes-validate"),
    )
}

fn validate(checker: &Path, version: &str, files: &[PathBuf]) -> std::process::Output {
    Command::new(checker)
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running kubernetes-validate")
}

#[test]
fn manifests_are_valid_against_the_kubernetes_schemas() {
    let Some(checker) = kubernetes_validate() else {
        return;
    };
    let files: Vec<PathBuf> = manifests().iter().map(|f| kube_dir().join(f)).collect();
    assert!(files.len() >= 6, "manifests found: {files:?}");
    // The oldest release whose API the manifests use (policy/v1, seccompProfile and the
    // rest are older), and the newest the checker knows.
    for version in ["1.30.0", "1.37.0"] {
        let output = validate(&checker, version, &files);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "kubernetes-validate {version}:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // One verdict per file, each a pass (a file it skipped would not say "passed").
        for file in &files {
            let name = file.display().to_string();
            assert!(
                stdout
                    .lines()
                    .any(|l| l.contains("INFO") && l.contains(&name) && l.contains(" passed ")),
                "no pass for {name} at {version}:\n{stdout}"
            );
        }
    }
}

/// The checker refuses what it should: a misspelt field (`replica`) in strict mode and a
/// wrong type. Without this, a checker that passed everything would pass the test above.
#[test]
fn the_schema_checker_refuses_a_broken_deployment() {
    let Some(checker) = kubernetes_validate() else {
        return;
    };
    let good = read(&kube_dir().join("deployment.yaml"));
    let dir = tempfile::tempdir().expect("temp dir");
    for (what, broken) in [
        (
            "misspelt field",
            good.replacen("  replicas: 3", "  replica: 3", 1),
        ),
        (
            "wrong type",
            good.replacen("  replicas: 3", "  replicas: three", 1),
        ),
        (
            "unknown securityContext field",
            good.replacen("readOnlyRootFilesystem: true", "readOnlyRootFS: true", 1),
        ),
    ] {
        assert_ne!(broken, good, "{what}: the edit did not apply");
        let file = dir.path().join("deployment.yaml");
        std::fs::write(&file, broken).expect("write");
        let output = validate(&checker, "1.37.0", &[file]);
        assert!(
            !output.status.success(),
            "{what} passed:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

/// The kustomization lists every manifest but the Secret example, and no other file.
#[test]
fn the_kustomization_lists_every_manifest_but_the_secret_example() {
    let kustomization = yaml("kustomization.yaml");
    let listed: BTreeSet<&str> = seq(&kustomization, &["resources"])
        .iter()
        .map(|r| r.as_str().expect("a file name"))
        .collect();
    let expected: BTreeSet<String> = manifests()
        .into_iter()
        .filter(|f| f != "secret.example.yaml")
        .collect();
    let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(listed, expected);
    assert_eq!(string(&kustomization, &["namespace"]), "portcullis");
    // A fixed ConfigMap name: an update reaches the mounted files and reloads live.
    assert_eq!(
        at(
            &kustomization,
            &["generatorOptions", "disableNameSuffixHash"]
        )
        .as_bool(),
        Some(true)
    );
}

/// The Deployment's one container.
fn container(deployment: &Value) -> &Value {
    let containers = seq(deployment, &["spec", "template", "spec", "containers"]);
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

/// The pod volume named `name`.
fn volume<'v>(deployment: &'v Value, name: &str) -> &'v Value {
    seq(deployment, &["spec", "template", "spec", "volumes"])
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no volume `{name}`"))
}

/// Each mount of the container: its path and the volume it mounts. None is a subPath
/// mount (those never see an update of their ConfigMap or Secret).
fn mounts(deployment: &Value) -> Vec<(PathBuf, &Value)> {
    seq(container(deployment), &["volumeMounts"])
        .iter()
        .map(|m| {
            assert!(
                m.get("subPath").is_none() && m.get("subPathExpr").is_none(),
                "a subPath mount never updates: {m:?}"
            );
            let name = string(m, &["name"]);
            (
                PathBuf::from(string(m, &["mountPath"])),
                volume(deployment, name),
            )
        })
        .collect()
}

/// The volume mounted exactly at `dir`.
fn mounted_at<'v>(deployment: &'v Value, dir: &Path) -> &'v Value {
    mounts(deployment)
        .into_iter()
        .find(|(path, _)| path == dir)
        .map(|(_, volume)| volume)
        .unwrap_or_else(|| panic!("nothing is mounted at {}", dir.display()))
}

#[test]
fn the_configmap_config_loads_and_its_paths_are_the_deployments_mounts() {
    let configmap = yaml("configmap.yaml");
    let deployment = yaml("deployment.yaml");
    let secret = yaml("secret.example.yaml");
    let kustomization = yaml("kustomization.yaml");

    // The container is started on the ConfigMap's file, in the directory it is mounted at.
    let args: Vec<&str> = seq(container(&deployment), &["args"])
        .iter()
        .map(|a| a.as_str().expect("a string"))
        .collect();
    let config_at = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| PathBuf::from(w[1]))
        .expect("--config in the container's args");
    assert_eq!(args[0], "serve");
    let config_dir = config_at.parent().expect("a folder");
    let file_name = config_at.file_name().expect("a file").to_string_lossy();
    let config_volume = mounted_at(&deployment, config_dir);
    assert_eq!(
        string(config_volume, &["configMap", "name"]),
        string(&configmap, &["metadata", "name"])
    );
    let text = string(&configmap, &["data", &file_name]);

    // It loads as the gateway loads it, resolved from the folder it is mounted in.
    let config = portcullis::config::load_str(text, "deploy/kubernetes/configmap.yaml", config_dir)
        .unwrap_or_else(|e| panic!("the ConfigMap's config does not load: {e}"));
    // The manifests run no Redis: `[shared]` may appear in a comment only.
    for line in text.lines().filter(|l| l.to_lowercase().contains("redis")) {
        assert!(line.trim_start().starts_with('#'), "not a comment: {line}");
    }

    // Listens where the container port, the probes and the Service point.
    let port = at(container(&deployment), &["ports"])[0].clone();
    assert_eq!(
        port.get("containerPort").and_then(Value::as_u64),
        Some(u64::from(config.server.listen.port()))
    );
    assert!(
        config.server.listen.ip().is_unspecified(),
        "reachable from the Service"
    );

    // The providers directory is the providers ConfigMap's mount, and every component the
    // config names is a file of that ConfigMap.
    let providers_volume = mounted_at(&deployment, &config.server.providers_dir);
    let providers_map = string(providers_volume, &["configMap", "name"]);
    let generator = seq(&kustomization, &["configMapGenerator"])
        .iter()
        .find(|g| g.get("name").and_then(Value::as_str) == Some(providers_map))
        .unwrap_or_else(|| panic!("no configMapGenerator makes `{providers_map}`"));
    let in_map: BTreeSet<String> = seq(generator, &["files"])
        .iter()
        .map(|f| {
            let f = f.as_str().expect("a file");
            Path::new(f)
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut components = BTreeSet::new();
    for (name, provider) in &config.providers {
        if let portcullis::config::model::ProviderSettings::Wasm(wasm) = &provider.settings {
            assert_eq!(
                wasm.component.parent(),
                Some(config.server.providers_dir.as_path()),
                "provider {name}"
            );
            let file = wasm.component.file_name().expect("a file");
            components.insert(file.to_string_lossy().into_owned());
        }
    }
    assert!(
        !components.is_empty(),
        "the example config uses Wasm providers"
    );
    assert_eq!(
        components, in_map,
        "the providers ConfigMap holds exactly the components the config names"
    );

    // Each secret reference is served by the Secret: a file:// one is a key of the Secret's
    // volume, an env:// one a secretKeyRef variable.
    let secret_name = string(&secret, &["metadata", "name"]);
    let secret_keys: BTreeSet<&str> = at(&secret, &["stringData"])
        .as_mapping()
        .expect("stringData")
        .keys()
        .map(|k| k.as_str().expect("a key"))
        .collect();
    let env = seq(container(&deployment), &["env"]);
    let (mut files, mut vars) = (0, 0);
    for reference in &config.secret_refs {
        match reference {
            SecretRef::File(path) => {
                files += 1;
                let dir = path.parent().expect("a folder");
                let volume = mounted_at(&deployment, dir);
                assert_eq!(string(volume, &["secret", "secretName"]), secret_name);
                let key = path.file_name().expect("a file").to_string_lossy();
                assert!(secret_keys.contains(&*key), "no key `{key}` in the Secret");
            }
            SecretRef::Env(var) => {
                vars += 1;
                let entry = env
                    .iter()
                    .find(|e| e.get("name").and_then(Value::as_str) == Some(var.as_str()))
                    .unwrap_or_else(|| panic!("the container does not set {var}"));
                let from = at(entry, &["valueFrom", "secretKeyRef"]);
                assert_eq!(string(from, &["name"]), secret_name);
                assert!(secret_keys.contains(string(from, &["key"])));
            }
            other => panic!("the example uses file:// and env:// only, not {other:?}"),
        }
    }
    assert!(files >= 1 && vars >= 1, "both kinds of reference are shown");

    // Mounted read-only, as directories; /tmp the only writable one.
    for (path, volume) in mounts(&deployment) {
        if volume.get("emptyDir").is_some() {
            assert_eq!(path, Path::new("/tmp"));
        }
    }
    for m in seq(container(&deployment), &["volumeMounts"]) {
        if string(m, &["mountPath"]) != "/tmp" {
            assert_eq!(
                m.get("readOnly").and_then(Value::as_bool),
                Some(true),
                "{m:?}"
            );
        }
    }
}

#[test]
fn the_deployment_probes_scales_and_runs_unprivileged() {
    let deployment = yaml("deployment.yaml");
    let service = yaml("service.yaml");
    let pdb = yaml("pdb.yaml");
    let c = container(&deployment);
    assert_eq!(string(c, &["readinessProbe", "httpGet", "path"]), "/readyz");
    assert_eq!(string(c, &["livenessProbe", "httpGet", "path"]), "/healthz");
    let port_name = string(&at(c, &["ports"])[0], &["name"]);
    assert_eq!(string(c, &["readinessProbe", "httpGet", "port"]), port_name);
    assert_eq!(
        string(&seq(&service, &["spec", "ports"])[0], &["targetPort"]),
        port_name
    );

    let replicas = at(&deployment, &["spec", "replicas"])
        .as_u64()
        .expect("replicas");
    assert!(replicas >= 2, "several replicas");
    for kind in ["requests", "limits"] {
        assert!(
            at(c, &["resources", kind]).get("memory").is_some(),
            "{kind}.memory"
        );
    }

    // Non-root, read-only root filesystem, nothing to escalate with.
    let pod = at(
        &deployment,
        &["spec", "template", "spec", "securityContext"],
    );
    assert_eq!(pod.get("runAsNonRoot").and_then(Value::as_bool), Some(true));
    let sc = at(c, &["securityContext"]);
    assert_eq!(
        sc.get("readOnlyRootFilesystem").and_then(Value::as_bool),
        Some(true)
    );
    assert_eq!(
        sc.get("allowPrivilegeEscalation").and_then(Value::as_bool),
        Some(false)
    );
    assert_eq!(seq(sc, &["capabilities", "drop"])[0].as_str(), Some("ALL"));

    // The Service and the PDB select the Deployment's pods, and the PDB leaves some up.
    let labels = at(&deployment, &["spec", "template", "metadata", "labels"]);
    assert_eq!(
        at(&deployment, &["spec", "selector", "matchLabels"]),
        labels
    );
    assert_eq!(at(&service, &["spec", "selector"]), labels);
    assert_eq!(at(&pdb, &["spec", "selector", "matchLabels"]), labels);
    let unavailable = at(&pdb, &["spec", "maxUnavailable"])
        .as_u64()
        .expect("a count");
    assert!(unavailable < replicas);
}

/// The Dockerfile's instructions, continuation lines joined.
fn dockerfile() -> Vec<String> {
    let text = read(&root().join("deploy/Dockerfile"));
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() && current.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// `--package NAME` values of the `RUN cargo build` instructions.
fn packages(instructions: &[String]) -> Vec<String> {
    instructions
        .iter()
        .filter(|l| l.starts_with("RUN") && l.contains("cargo build"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words
                .windows(2)
                .filter(|w| w[0] == "--package")
                .map(|w| w[1].to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A `[package] name` of a manifest (and `[[bin]] name`s).
fn manifest_names(path: &Path) -> (String, Vec<String>) {
    let manifest: toml::Table = read(path).parse().expect("a Cargo.toml");
    let name = manifest["package"]["name"]
        .as_str()
        .expect("package.name")
        .to_owned();
    let bins = manifest
        .get("bin")
        .and_then(|b| b.as_array())
        .map(|bins| {
            bins.iter()
                .filter_map(|b| b.get("name")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (name, bins)
}

#[test]
fn the_dockerfile_builds_what_the_repository_has() {
    let instructions = dockerfile();
    let root = root();

    // The builder's toolchain is the pinned one.
    let toolchain: toml::Table = read(&root.join("rust-toolchain.toml"))
        .parse()
        .expect("toml");
    let channel = toolchain["toolchain"]["channel"].as_str().expect("channel");
    let minor = channel.rsplit_once('.').map_or(channel, |(mm, _)| mm);
    let builder = instructions
        .iter()
        .find(|l| l.starts_with("FROM") && l.contains(" AS build"))
        .expect("a build stage");
    assert!(
        builder.contains(&format!("rust:{minor}-")),
        "{builder} is not Rust {minor}"
    );
    assert!(
        instructions
            .iter()
            .any(|l| l == "RUN rustup target add wasm32-wasip2"),
        "the builder adds wasm32-wasip2"
    );

    // What it copies from the context exists (and the context keeps target/ out).
    for line in instructions.iter().filter(|l| l.starts_with("COPY ")) {
        if line.contains("--from=") {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        for source in &words[..words.len() - 1] {
            assert!(
                root.join(source).exists(),
                "COPY {source}: not in the repository"
            );
        }
    }
    let ignore = read(&root.join(".dockerignore"));
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        ".dockerignore keeps target/ out"
    );

    // The packages it builds are the CLI (whose binary it copies) and guest providers.
    let (cli, bins) = manifest_names(&root.join("cli/Cargo.toml"));
    let built = packages(&instructions);
    assert!(built.contains(&cli), "{built:?} lacks {cli}");
    assert_eq!(bins, ["portcullis"]);
    let bin = &bins[0];
    assert!(
        instructions
            .iter()
            .any(|l| l.contains("cargo build") && l.contains(&format!("--bin {bin}"))),
        "builds --bin {bin}"
    );
    assert!(
        instructions
            .iter()
            .any(|l| l.contains(&format!("cp target/release/{bin} "))),
        "copies target/release/{bin}"
    );
    let mut guests = BTreeSet::new();
    for dir in std::fs::read_dir(root.join("guest-providers/providers")).expect("providers") {
        let dir = dir.expect("entry").path();
        guests.insert(manifest_names(&dir.join("Cargo.toml")).0);
    }
    let guest_built: BTreeSet<String> = built.into_iter().filter(|p| p != &cli).collect();
    assert!(
        guest_built.is_subset(&guests),
        "{guest_built:?} are not all guest providers ({guests:?})"
    );
    // Each built provider is copied out under the name the config's `component` uses,
    // which includes every component the Kubernetes config names.
    let copy = instructions
        .iter()
        .find(|l| l.contains("for p in"))
        .expect("the copy loop");
    for package in &guest_built {
        assert!(
            copy.contains(&package.replace('-', "_")),
            "{package} is built but not copied"
        );
    }
    let kustomization = yaml("kustomization.yaml");
    for file in seq(&kustomization, &["configMapGenerator"])
        .iter()
        .flat_map(|g| seq(g, &["files"]))
    {
        let stem = Path::new(file.as_str().expect("a file"))
            .file_stem()
            .expect("a stem")
            .to_string_lossy()
            .into_owned();
        assert!(guest_built.contains(&stem), "the image lacks {stem}");
    }

    // The user and port the Deployment relies on.
    let deployment = yaml("deployment.yaml");
    let pod = at(
        &deployment,
        &["spec", "template", "spec", "securityContext"],
    );
    let uid = pod
        .get("runAsUser")
        .and_then(Value::as_u64)
        .expect("runAsUser");
    assert!(
        instructions
            .iter()
            .any(|l| l == &format!("USER {uid}:{uid}")),
        "the image runs as {uid}"
    );
    let port = at(container(&deployment), &["ports"])[0]
        .get("containerPort")
        .and_then(Value::as_u64)
        .expect("containerPort");
    assert!(instructions.iter().any(|l| l == &format!("EXPOSE {port}")));
    assert!(
        instructions
            .iter()
            .any(|l| l.starts_with("ENTRYPOINT") && l.contains(&format!("/usr/local/bin/{bin}")))
    );

    build_image_if_asked(&root);
}

/// Builds the image when `PORTCULLIS_BUILD_IMAGE=1` and a container engine answers (a
/// release build of the gateway and the providers: many minutes); else says why not.
fn build_image_if_asked(root: &Path) {
    if std::env::var("PORTCULLIS_BUILD_IMAGE").as_deref() != Ok("1") {
        println!("skipped: image build (set PORTCULLIS_BUILD_IMAGE=1 to build deploy/Dockerfile)");
        return;
    }
    let engine = ["docker", "podman", "buildah"].into_iter().find(|engine| {
        let probe = if *engine == "buildah" {
            "version"
        } else {
            "info"
        };
        Command::new(engine)
            .arg(probe)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(engine) = engine else {
        println!("skipped: image build: no docker, podman or buildah that answers");
        return;
    };
    let verb: &[&str] = if engine == "buildah" {
        &["bud"]
    } else {
        &["build"]
    };
    let status = Command::new(engine)
        .current_dir(root)
        .args(verb)
        .args(["-f", "deploy/Dockerfile", "-t", "portcullis:test", "."])
        .status()
        .expect("running the image build");
    assert!(status.success(), "{engine} build failed");
}

/// What `kubectl apply -k` would send: the kustomization rendered (with the built example
/// providers in its `providers/`) and validated whole. Needs `kubectl` (kustomize is built
/// in), which the project does not install: skipped, saying so, without it.
#[test]
fn the_rendered_kustomization_is_valid() {
    let Some(checker) = kubernetes_validate() else {
        return;
    };
    let kubectl_works = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !kubectl_works {
        println!("skipped: kubectl is not installed, so the kustomization is not rendered");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    for file in manifests()
        .iter()
        .map(String::as_str)
        .chain(["kustomization.yaml"])
    {
        std::fs::copy(kube_dir().join(file), dir.path().join(file)).expect("copy");
    }
    std::fs::create_dir(dir.path().join("providers")).expect("providers/");
    for (built, name) in [
        (
            portcullis_tests::guests::PARTNER_TOKEN,
            "partner-token.wasm",
        ),
        (
            portcullis_tests::guests::MCP_TOOL_POLICY,
            "mcp-tool-policy.wasm",
        ),
    ] {
        std::fs::copy(built, dir.path().join("providers").join(name)).expect("copy");
    }
    let rendered = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir.path())
        .output()
        .expect("kubectl kustomize");
    assert!(
        rendered.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let out = dir.path().join("rendered.yaml");
    std::fs::write(&out, &rendered.stdout).expect("write");
    let output = validate(&checker, "1.37.0", &[out]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for resource in [
        "namespace/portcullis",
        "configmap/portcullis-config",
        "configmap/portcullis-providers",
        "service/portcullis",
        "deployment/portcullis",
        "poddisruptionbudget/portcullis",
    ] {
        assert!(
            stdout.contains(&format!("passed for resource {resource} ")),
            "{resource} not rendered:\n{stdout}"
        );
    }
}
