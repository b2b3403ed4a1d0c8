//! The OpenAPI document against the running server: schemathesis (Python, pinned in
//! `tests/schemathesis/requirements.txt`) generates requests for every operation
//! `/openapi.json` lists, signed as a registered device by `tests/schemathesis/hooks.py`, and
//! runs all its checks on the answers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hush_e2e::{RestClient, TestAccount, TestServer};

/// Longest the schemathesis run may take (debug build, 2 cores: it takes under a minute).
const RUN_DEADLINE: Duration = Duration::from_secs(600);
/// Where `.ci/run` installs the pinned schemathesis.
const VENV: &str = ".venvs/hush-schemathesis";

fn schemathesis_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis")
}

/// The version `requirements.txt` pins.
fn pinned_version() -> String {
    let path = schemathesis_dir().join("requirements.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .find_map(|line| line.trim().strip_prefix("schemathesis=="))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{} pins no `schemathesis==` version", path.display()))
}

/// The schemathesis executable: `$HUSH_SCHEMATHESIS`, else `~/.venvs/hush-schemathesis`, else
/// `schemathesis` on the `PATH`; it must be the pinned version.
fn schemathesis_binary() -> PathBuf {
    let pinned = pinned_version();
    let venv = std::env::var_os("HOME").map(|home| Path::new(&home).join(VENV).join("bin/schemathesis"));
    let bin = std::env::var_os("HUSH_SCHEMATHESIS")
        .map(PathBuf::from)
        .or_else(|| venv.filter(|p| p.is_file()))
        .unwrap_or_else(|| PathBuf::from("schemathesis"));
    let install = format!(
        "install it as .ci/run does: `python3 -m venv ~/{VENV} && ~/{VENV}/bin/pip install -r \
         tests/schemathesis/requirements.txt` (or set HUSH_SCHEMATHESIS to a schemathesis {pinned} executable)"
    );
    let output = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): schemathesis is not installed; {install}", bin.display()));
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(
        version.trim().ends_with(&format!("version {pinned}")),
        "{} is {:?}, this test needs schemathesis {pinned}; {install}",
        bin.display(),
        version.trim()
    );
    bin
}

/// One answer the hook logged.
#[derive(serde::Deserialize)]
struct Logged {
    method: String,
    path: String,
    status: u16,
}

/// Runs `schemathesis run --checks all` against a fresh hushd with a registered account to sign
/// as, and fails on any finding. The run is bounded (fixed seed, 50 examples per operation, one
/// worker); the abuse limits are lifted by [`TestServer`]. Then checks the run really covered
/// the API: every operation in the document was called, and every authenticated one got at
/// least one answer other than 401 (so the hook's signatures verify).
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_passes_clean() {
    let bin = schemathesis_binary();
    let server = TestServer::start().await;
    let mut account = TestAccount::register(&server, "schemathesis").await;
    // A second device, so `DELETE /v1/devices/{device_id}` (signed by the primary) can succeed.
    account.add_device(&server).await;
    let device = account.primary();
    let key: String = device.signing_key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
    let log = work.path().join("answers.jsonl");
    let dir = schemathesis_dir();

    // A long run: HUSH_SCHEMATHESIS_EXAMPLES=1000 HUSH_SCHEMATHESIS_SEED=$RANDOM.
    let examples = std::env::var("HUSH_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "50".into());
    let seed = std::env::var("HUSH_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261202".into());

    let started = Instant::now();
    let run = tokio::process::Command::new(&bin)
        .arg("--config-file")
        .arg(dir.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/openapi.json", server.http_url()))
        .args(["--checks", "all", "--max-examples", &examples, "--seed", &seed, "--workers", "1"])
        .args(["--generation-database", "none", "--no-color", "--report-dir"])
        .arg(work.path().join("report"))
        .env("SCHEMATHESIS_HOOKS", dir.join("hooks.py"))
        .env("HUSH_ST_ACCOUNT", device.account_id.to_string())
        .env("HUSH_ST_DEVICE", device.device_id.to_string())
        .env("HUSH_ST_KEY", key)
        .env("HUSH_ST_USERNAME", &account.username)
        .env("HUSH_ST_LOG", &log)
        .current_dir(work.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let elapsed = started.elapsed();
    let shown = format!(
        "---- schemathesis stdout ----\n{}\n---- schemathesis stderr ----\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "schemathesis found problems ({}) after {elapsed:?}:\n{shown}", output.status);
    eprintln!("schemathesis passed in {elapsed:?}:\n{shown}");

    let mut answers: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("the hook logged nothing ({e}):\n{shown}"));
    for line in text.lines() {
        let logged: Logged = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad log line {line:?}: {e}"));
        answers.entry((logged.method, logged.path)).or_default().insert(logged.status);
    }
    let doc: serde_json::Value = RestClient::new(&server).get("/openapi.json").await.json(200);
    let paths = doc.get("paths").and_then(|p| p.as_object()).cloned().unwrap_or_default();
    let mut operations = 0;
    for (path, item) in &paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            operations += 1;
            let key = (method.to_ascii_uppercase(), path.clone());
            let statuses = answers.get(&key).unwrap_or_else(|| panic!("schemathesis never called {key:?}:\n{shown}"));
            eprintln!("{} {path} answered {statuses:?}", key.0);
            let secured = op.get("security").and_then(|s| s.as_array()).is_some_and(|s| !s.is_empty());
            if secured {
                assert!(
                    statuses.iter().any(|s| *s != 401),
                    "{key:?} only ever answered 401: the hook's signatures do not verify:\n{shown}"
                );
            }
        }
    }
    assert!(operations >= 14, "only {operations} operations in /openapi.json");
}
