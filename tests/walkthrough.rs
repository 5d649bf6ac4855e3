//! README's walkthrough, run as written against a fresh `annals serve`:
//! every `curl` (and `cargo run -- ...`) line of the section is executed
//! in order, at a person's pace (each step waits until the system is
//! quiet: the saga has acted and checkpointed, the views have caught up),
//! and what the comments under it show must be what it printed: the JSON
//! members with concrete values (`"position":7`), the headers
//! (`Annals-Position: 14`, `ETag: "1"`) and the status. Placeholders
//! (`<customer id>`, `…`) match anything. `C=<customer id>` takes the id
//! of the answer before it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::faults::get;

/// One step of the walkthrough: a shell command and what it shows.
#[derive(Debug)]
struct Step {
    command: String,
    expected: String,
}

/// The walkthrough section of README.md.
fn walkthrough() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("### A walkthrough with curl")
        .expect("README has a walkthrough");
    let rest = &readme[start + 4..];
    let end = rest
        .find("\n### ")
        .or_else(|| rest.find("\n## "))
        .unwrap_or(rest.len());
    rest[..end].to_owned()
}

/// The shell blocks of `text`, line by line.
fn shell_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside && line.trim() == "```sh";
            continue;
        }
        if inside {
            out.push(line.to_owned());
        }
    }
    out
}

/// Whether a command is complete: its single quotes balanced and no
/// continuation backslash at the end.
fn complete(command: &str) -> bool {
    command.matches('\'').count().is_multiple_of(2) && !command.trim_end().ends_with('\\')
}

/// Splits a line into its command and an inline `# comment`, if any
/// (outside single quotes).
fn split_comment(line: &str) -> (&str, Option<&str>) {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '#' if !quoted && line[..i].ends_with(' ') => {
                return (line[..i].trim_end(), Some(&line[i + 1..]));
            }
            _ => {}
        }
    }
    (line, None)
}

fn steps(lines: &[String]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut pending = String::new();
    for line in lines {
        if !pending.is_empty() {
            pending.push('\n');
            pending.push_str(line);
            if complete(&pending) {
                steps.push(Step {
                    command: std::mem::take(&mut pending),
                    expected: String::new(),
                });
            }
            continue;
        }
        let trimmed = line.trim_start();
        if let Some(comment) = trimmed.strip_prefix('#') {
            if let Some(step) = steps.last_mut() {
                step.expected.push_str(comment);
                step.expected.push('\n');
            }
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let (command, comment) = split_comment(trimmed);
        let step = Step {
            command: command.to_owned(),
            expected: comment.map(|c| format!("{c}\n")).unwrap_or_default(),
        };
        if complete(command) {
            steps.push(step);
        } else {
            pending = step.command;
        }
    }
    steps
}

/// What an expected comment promises, as fragments of the output; headers
/// and the status only when the command prints them (`curl -i`).
fn promises(expected: &str, with_headers: bool) -> Vec<String> {
    let mut out = Vec::new();
    // JSON members with a concrete value.
    let mut i = 0;
    while let Some(at) = expected[i..].find("\":") {
        let colon = i + at + 1;
        let key_start = expected[..colon - 1].rfind('"').map_or(0, |k| k + 1);
        let key = &expected[key_start..colon - 1];
        let value: String = expected[colon + 1..]
            .chars()
            .take_while(|c| !matches!(c, ',' | '}' | ']' | '\n'))
            .collect();
        i = colon + 1;
        let plain = !value.contains('<') && !value.contains('…') && !value.is_empty();
        let scalar = value.starts_with('"') && value.ends_with('"') && value.len() > 1
            || value.parse::<i64>().is_ok()
            || matches!(value.as_str(), "true" | "false" | "null");
        if plain && scalar && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(format!("\"{key}\":{value}"));
        }
    }
    for line in expected.lines().map(str::trim) {
        // Headers: `Name: value` where the name is a header's.
        for (name, rest) in line
            .split(", ")
            .filter_map(|part| part.split_once(": "))
            .filter(|(n, _)| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .filter(|(n, _)| n.contains('-') || n.chars().next().is_some_and(char::is_uppercase))
        {
            if rest.starts_with('{') || rest.contains('…') || rest.contains('<') {
                continue;
            }
            if with_headers && ["ETag", "Annals-Position", "Retry-After"].contains(&name) {
                out.push(format!("{}: {rest}", name.to_ascii_lowercase()));
            }
        }
        // The status a line starts with.
        if let Some(code) = line.split([' ', '{']).next()
            && with_headers
            && code.len() == 3
            && code.parse::<u16>().is_ok_and(|c| (100..600).contains(&c))
        {
            out.push(format!("HTTP/1.1 {code}"));
        }
        // A plain sentence a command prints (no JSON, no progress bar).
        if !line.contains('{')
            && !line.starts_with('[')
            && line.contains(": ")
            && !line.contains('…')
        {
            let (name, _) = line.split_once(": ").unwrap_or_default();
            if !name.contains('-') && name.chars().all(|c| c.is_ascii_lowercase()) {
                out.push(line.to_owned());
            }
        }
    }
    out
}

/// Whether every promise is in `output` (header names compared without
/// case).
fn kept<'a>(promises: &'a [String], output: &str) -> Vec<&'a String> {
    let lower = output.to_ascii_lowercase();
    promises
        .iter()
        .filter(|p| {
            let header = p.starts_with("etag:")
                || p.starts_with("annals-position:")
                || p.starts_with("retry-after:");
            if header {
                !lower.lines().any(|l| l.trim() == p.as_str())
            } else {
                !output.contains(p.as_str())
            }
        })
        .collect()
}

/// Waits until the system is quiet: every projection caught up with a
/// head that did not move for longer than the saga's checkpoint interval
/// (1 s), as it is between the steps a person types.
async fn quiet(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last: Option<(u64, Instant)> = None;
    loop {
        let (status, body) = get(&format!("{url}/projections")).await;
        assert_eq!(status, 200, "{body}");
        let list = body
            .as_array()
            .cloned()
            .or_else(|| body["projections"].as_array().cloned())
            .unwrap();
        let head = list
            .iter()
            .map(|p| p["head"].as_u64().unwrap())
            .max()
            .unwrap_or(0);
        let caught_up = list.iter().all(|p| p["position"] == p["head"]);
        match last {
            Some((h, since))
                if h == head && caught_up && since.elapsed() > Duration::from_millis(1500) =>
            {
                return;
            }
            Some((h, _)) if h == head => {}
            _ => last = Some((head, Instant::now())),
        }
        assert!(Instant::now() < deadline, "never quiet: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readmes_walkthrough_prints_what_it_says() {
    let steps = steps(&shell_lines(&walkthrough()));
    assert!(steps.len() >= 8, "{steps:#?}");
    let dir = tempfile::tempdir().unwrap();
    let serving = crate::cli::start(
        &["serve", "--listen", "127.0.0.1:0"],
        dir.path(),
        "listening on",
    );
    let url = serving.url.clone();
    let host = url.trim_start_matches("http://").to_owned();
    let binary = env!("CARGO_BIN_EXE_annals");
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut previous = String::new();
    let mut broken = Vec::new();
    for step in &steps {
        // `C=<customer id>`: the id of the answer before.
        if let Some((name, value)) = step.command.split_once('=')
            && value.starts_with('<')
            && name.chars().all(|c| c.is_ascii_uppercase())
        {
            let body = previous
                .lines()
                .rev()
                .find(|l| l.starts_with('{'))
                .unwrap_or("{}");
            let id = serde_json::from_str::<Value>(body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            vars.insert(name.to_owned(), id);
            continue;
        }
        let mut command = step.command.replace("localhost:8080", &host);
        if let Some(rest) = command.strip_prefix("cargo run --release -- ") {
            command = format!("{binary} {rest} --url {url}");
        }
        let with_headers = command.contains("curl -si") || command.contains("curl -i");
        let promised = promises(&step.expected, with_headers);
        let deadline = Instant::now() + Duration::from_secs(15);
        let output = loop {
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(&command)
                .envs(&vars)
                .output()
                .unwrap();
            let output = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // A step that reads ("a moment later") may have to wait for the
            // saga and the views; one that writes runs once.
            let reads = !command.contains(" -d ")
                && !command.contains("-X DELETE")
                && !command.contains(" rebuild ");
            if kept(&promised, &output).is_empty() || !reads || Instant::now() > deadline {
                break output;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let missing: Vec<String> = kept(&promised, &output).into_iter().cloned().collect();
        if !missing.is_empty() {
            broken.push(format!(
                "{}\n  shows {missing:?}\n  printed {output}",
                step.command
            ));
        }
        previous = output;
        quiet(&url).await;
    }
    assert!(
        broken.is_empty(),
        "README's walkthrough differs from a fresh run:\n{}",
        broken.join("\n")
    );
}
