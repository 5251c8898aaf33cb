//! Every command explains itself: `shardsage <command> --help` gives each flag a description,
//! and the flags with a default show it.

use std::process::Command;

const COMMANDS: [&str; 12] = [
    "generate",
    "ingest",
    "partition",
    "inspect",
    "train",
    "eval",
    "embed",
    "predict",
    "plot",
    "select",
    "walk",
    "node2vec",
];

fn help(command: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shardsage"))
        .args([command, "--help"])
        .output()
        .expect("run shardsage");
    assert!(out.status.success(), "{command} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_flag_of_every_command_has_a_description() {
    for command in COMMANDS {
        let text = help(command);
        let lines: Vec<&str> = text.lines().collect();
        let mut flags = 0;
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if !(t.starts_with("--") || t.starts_with("-h,") || t.starts_with("-V,")) {
                continue;
            }
            flags += 1;
            // Short descriptions share the flag's line (after two spaces); long ones follow on
            // the next line, indented further.
            let inline = t.split_once("  ").map(|(_, d)| d).unwrap_or("");
            let next = lines.get(i + 1).copied().unwrap_or("");
            let described = |d: &str| {
                let d = d.trim();
                !d.is_empty() && !d.starts_with('-') && !d.starts_with('[')
            };
            assert!(
                described(inline) || (inline.trim().is_empty() && described(next)),
                "shardsage {command}: `{t}` has no description"
            );
        }
        assert!(flags >= 2, "shardsage {command}: no flags found in\n{text}");
    }
}

#[test]
fn training_flags_show_their_defaults_and_the_ogb_reference() {
    let text = help("train");
    for (flag, default) in [
        ("--epochs", "10"),
        ("--batch-size", "512"),
        ("--lr", "0.0005"),
        ("--hidden", "256"),
        ("--layers", "3"),
        ("--fanouts", "15,10,5"),
        ("--sampling", "subgraph"),
        ("--init", "glorot"),
        ("--dropout", "0"),
        ("--steps-per-epoch", "0"),
        ("--device", "auto"),
    ] {
        let at = text
            .find(&format!("{flag} <"))
            .unwrap_or_else(|| panic!("train --help lacks {flag}"));
        let block = &text[at..];
        let end = block[2..].find("\n      -").map_or(block.len(), |e| e + 2);
        assert!(
            block[..end].contains(&format!("[default: {default}]")),
            "{flag} does not show [default: {default}]:\n{}",
            &block[..end]
        );
    }
}
