//! `r1-gateway demo` as a user runs it: the sample prompts come back with their routes, a center
//! answer shows its reasoning (from the labelled stand-in for the external R1 API), and two demos on
//! different public/admin ports run side by side (the model servers they start take free ports).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running demo and everything it printed up to its closing line.
struct Demo {
    child: Child,
    printed: String,
}

impl Demo {
    fn start(public: u16, admin: u16) -> Child {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        Command::new(env!("CARGO_BIN_EXE_r1-gateway"))
            .args(["demo", "--config", &format!("{root}/deploy/config/gateway-demo.toml")])
            .args(["--models", &format!("{root}/models")])
            .args([
                "--listen",
                &format!("127.0.0.1:{public}"),
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ])
            .env_remove("R1_CENTER_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Reads the demo's output until its closing line ("Ctrl-C stops everything").
    fn read(mut child: Child) -> Self {
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut printed = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("the demo did not finish:\n{printed}"));
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("Ctrl-C stops everything") {
                return Self { child, printed };
            }
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn two_demos_run_side_by_side_and_the_center_answers_with_reasoning() {
    let ports: Vec<u16> = (0..4).map(|_| support::free_port()).collect();
    let (first, second) = (Demo::start(ports[0], ports[1]), Demo::start(ports[2], ports[3]));
    let (first, second) = (Demo::read(first), Demo::read(second));
    for demo in [&first, &second] {
        let out = &demo.printed;
        assert!(out.contains("route: edge (below_edge_max)"), "{out}");
        assert!(out.contains("route: center (above_center_min)"), "{out}");
        assert!(
            out.contains("     thinking: [scripted stand-in for the external R1 API"),
            "{out}"
        );
        assert!(
            out.contains("center:  a scripted stand-in for the external R1 API"),
            "{out}"
        );
        assert!(
            !out.contains("(no answer)") && !out.contains("sample prompts failed"),
            "{out}"
        );
    }
    assert!(first.printed.contains(&format!("127.0.0.1:{}/v1", ports[0])));
    assert!(second.printed.contains(&format!("127.0.0.1:{}/v1", ports[2])));
}
