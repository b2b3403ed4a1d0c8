//! `hush link` on a new machine and `hush link-approve` (or the daemon's `link_approve`) on
//! the primary device, against a real hushd.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::process::Child;
use tokio::sync::mpsc;

use crate::support::{DEADLINE, Hushd, Output, User, line_channel, next_line};

/// A running `hush link --json`: the process, its stdout lines, and its first line.
struct Linking {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    code: Value,
}

impl Linking {
    /// Starts `hush link --json ARGS` in `device`'s (empty) data directory and reads the code.
    async fn start(device: &User, args: &[&str]) -> Linking {
        let mut cmd_args = vec!["link", "--json"];
        cmd_args.extend_from_slice(args);
        let mut child = device.command(&cmd_args).spawn().expect("start hush link");
        let mut lines = line_channel(child.stdout.take().expect("stdout"));
        let Some(line) = next_line(&mut lines, "the link code").await else {
            let out = child.wait_with_output().await.expect("wait");
            panic!("hush link printed no code: {}", String::from_utf8_lossy(&out.stderr));
        };
        let code: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(code["event"], json!("link_code"), "{code}");
        Linking { child, lines, code }
    }

    fn text(&self) -> String {
        self.code["text"].as_str().expect("text").to_owned()
    }

    fn uri(&self) -> String {
        self.code["uri"].as_str().expect("uri").to_owned()
    }

    /// Waits (with the deadline) for the process to end: its exit code, the rest of its
    /// stdout and its stderr.
    async fn finish(mut self) -> Output {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("hush link did not finish within {DEADLINE:?}"))
            .expect("wait for hush link");
        let mut stdout = String::new();
        while let Some(line) = next_line(&mut self.lines, "the rest of hush link's output").await {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt as _;
            pipe.read_to_string(&mut stderr).await.expect("read stderr");
        }
        Output { code: status.code(), stdout, stderr }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn bodies(messages: &[Value]) -> Vec<String> {
    messages.iter().filter_map(|m| m["body"].as_str().map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_linked_with_the_text_code_joins_the_account_and_gets_its_messages() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let carol = User::register(&server, "carol").await;
    let laptop = User::fresh(&server, "alice-laptop");
    // Something for the history the new device gets.
    carol.send("alice", "before the laptop").await;
    assert_eq!(bodies(&alice.receive().await), ["before the laptop"]);

    let linking = Linking::start(&laptop, &["--name", "laptop"]).await;
    let text = linking.text();
    assert!(linking.uri().starts_with("hush://link?"), "{}", linking.code);
    let expires_at = linking.code["expires_at"].as_u64().expect("expires_at");
    assert!(expires_at > now_ms(), "{}", linking.code);
    assert!(!text.contains("://"), "{text}");

    let approved = alice.hush(&["link-approve", &text, "--json"]).await.ok().json_lines();
    assert_eq!(approved, [json!({ "approved": true })]);
    let out = linking.finish().await.ok();
    let lines = out.json_lines();
    let alice_status = alice.hush(&["status", "--json"]).await.ok().json_lines();
    assert_eq!(
        lines,
        [json!({ "event": "linked", "username": "alice", "account_id": alice_status[0]["account_id"],
                  "device_id": 2,
                  "history": { "imported": true, "messages": 1, "contacts": 1, "groups": 0 } })]
    );
    let earlier = laptop.hush_without_server(&["history", "carol", "--json"]).await.ok().json_lines();
    assert_eq!(bodies(&earlier), ["before the laptop"], "the history came with the link");

    // The new device remembers the server, and is device 2 of alice's account.
    let status = laptop.hush_without_server(&["status", "--json"]).await.ok().json_lines();
    assert_eq!(status[0]["username"], json!("alice"));
    assert_eq!(status[0]["account_id"], alice_status[0]["account_id"]);
    assert_eq!(status[0]["device_id"], json!(2));
    let devices = laptop.hush(&["devices", "--json"]).await.ok().json_lines();
    assert_eq!(devices.len(), 2, "{devices:?}");
    assert_eq!(devices[1]["name"], json!("laptop"));
    assert_eq!(devices[1]["this_device"], json!(true));

    carol.send("alice", "to both of you").await;
    assert_eq!(bodies(&alice.receive().await), ["to both of you"]);
    assert_eq!(bodies(&laptop.receive().await), ["to both of you"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_approves_the_uri_form_and_the_text_command_shows_a_qr_code() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let desktop = User::fresh(&server, "alice-desktop");

    // Text mode: the instruction, both forms, the expiry and a QR code, then the result.
    let mut child = desktop.command(&["link"]).spawn().expect("start hush link");
    let mut lines = line_channel(child.stdout.take().expect("stdout"));
    let mut shown = String::new();
    let uri = loop {
        let line = next_line(&mut lines, "the link code text").await.expect("hush link ended early");
        shown.push_str(&line);
        shown.push('\n');
        if let Some(uri) = line.strip_prefix("link URI:") {
            break uri.trim().to_owned();
        }
    };
    while !shown.contains("Waiting for the approval") {
        let line = next_line(&mut lines, "the link code text").await.expect("hush link ended early");
        shown.push_str(&line);
        shown.push('\n');
    }
    assert!(shown.contains("on your primary device run:"), "{shown}");
    assert!(shown.contains("hush link-approve "), "{shown}");
    assert!(shown.contains("link code: "), "{shown}");
    assert!(shown.contains('\u{2588}'), "no QR code in {shown}");
    assert!(shown.contains("(in 10 minutes)"), "{shown}");
    assert!(uri.starts_with("hush://link?"), "{uri}");

    let mut daemon = alice.daemon_stdio();
    let approved = daemon.rpc().call("link_approve", json!({ "code": uri })).await;
    assert_eq!(approved, json!({ "approved": true }));
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("link ends").expect("wait");
    assert!(status.success());
    let rest = next_line(&mut lines, "the linked line").await.unwrap_or_default();
    assert!(rest.starts_with("linked: this machine is device 2 of alice"), "{rest}");

    // A code that is no code at all is refused with a reason.
    let bad = daemon.rpc().call_raw("link_approve", json!({ "code": "nonsense" })).await;
    assert!(bad["error"]["message"].as_str().is_some_and(|m| m.contains("not a link code")), "{bad}");
    let devices = daemon.rpc().call("devices", json!({})).await;
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(2), "{devices}");
    assert!(daemon.close_stdin().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_primary_device_approves() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let alice2 = alice.add_device().await;
    let phone = User::fresh(&server, "alice-phone");
    let linking = Linking::start(&phone, &[]).await;

    let refused = alice2.hush(&["link-approve", &linking.text()]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("only the account's primary device (device 1)"), "{refused:?}");
    assert!(refused.stderr.contains("this is device 2"), "{refused:?}");
    let refused = alice2.hush(&["link-approve", &linking.text(), "--json"]).await;
    let lines = refused.json_lines();
    assert_eq!(lines[0]["error"]["kind"], json!("other"), "{refused:?}");

    // The code still works from the primary device (here without history).
    alice.hush(&["link-approve", &linking.text(), "--no-history"]).await.ok();
    let linked = linking.finish().await.ok().json_lines();
    assert_eq!(linked[0]["history"], json!({ "imported": false }), "{linked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_a_code_whose_link_was_killed_says_no_device_is_waiting() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let phone = User::fresh(&server, "alice-phone");
    let mut linking = Linking::start(&phone, &[]).await;
    linking.child.kill().await.expect("kill hush link");

    let refused = alice.hush(&["link-approve", &linking.text()]).await;
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(refused.stderr.contains("no new device is waiting for this code"), "{refused:?}");
    let devices = alice.hush(&["devices", "--json"]).await.ok().json_lines();
    assert_eq!(devices.len(), 1, "{devices:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unapproved_code_expires_and_hush_link_says_so() {
    let server = Hushd::start_with(&["--link-timeout-secs", "2"]).await;
    let phone = User::fresh(&server, "phone");
    let linking = Linking::start(&phone, &[]).await;
    let out = linking.finish().await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("the link code expired"), "{out:?}");
    assert!(out.stderr.contains("run `hush link` again"), "{out:?}");
    let lines = out.json_lines();
    assert_eq!(lines[0]["error"]["kind"], json!("network"), "{out:?}");
    // Nothing was left behind: the directory still holds no account.
    let status = phone.hush(&["status"]).await;
    assert!(status.stderr.contains("no account in"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_refuses_a_data_directory_that_holds_an_account() {
    let server = Hushd::start().await;
    let alice = User::register(&server, "alice").await;
    let out = alice.hush(&["link", "--json"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("already holds the account alice (device 1)"), "{out:?}");
    let lines = out.json_lines();
    assert_eq!(lines.len(), 1, "no link code may be shown: {out:?}");
    assert!(lines[0]["error"].is_object(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_help_explains_both_sides() {
    let server = Hushd::start().await;
    let nobody = User::fresh(&server, "nobody");
    let help = nobody.hush(&["--help"]).await.ok().stdout;
    assert!(help.contains("link-approve") && help.contains("  link "), "{help}");
    let help = nobody.hush(&["link", "--help"]).await.ok().stdout;
    for word in ["--name", "hush link-approve", "primary device", "10 minutes", "6 devices", "QR code", "link_code"] {
        assert!(help.contains(word), "{word} missing in {help}");
    }
    let help = nobody.hush(&["link-approve", "--help"]).await.ok().stdout;
    for word in ["primary device", "hush://link", "<CODE>"] {
        assert!(help.contains(word), "{word} missing in {help}");
    }
    let help = nobody.hush(&["daemon", "--help"]).await.ok().stdout;
    assert!(help.contains("link_approve"), "{help}");
}
