//! The result: the table of rows, the ratios derived from them, and
//! `target/bench/results.json`.

use std::fs;
use std::path::Path;

use super::edits::Edit;
use super::measure::Row;
use super::Summary;

/// What the ratios are computed from besides the rows.
pub struct Inputs<'a> {
    /// Ratios the scenarios computed (paired runs), in order.
    pub summary: Summary,
    /// Raw bytes of the snapshot directory.
    pub raw: u64,
    /// zstd levels of the level rows.
    pub levels: &'a [i32],
    /// Raw bytes of the text directory.
    pub text_raw: u64,
    /// The edit scenarios that ran, with the bytes each changed.
    pub edits: &'a [Edit],
}

fn opt(v: Option<u64>) -> String {
    v.map(|w| w.to_string()).unwrap_or_else(|| "-".into())
}

/// Prints the table and the ratios, and writes `<root>/results.json`.
pub fn write(root: &Path, rows: &[Row], inputs: &Inputs) -> Result<(), String> {
    let Inputs {
        summary,
        raw,
        levels,
        text_raw,
        edits,
    } = inputs;
    let (raw, text_raw) = (*raw, *text_raw);
    let get = |n: &str| rows.iter().find(|r| r.name.starts_with(n));
    let mut summary = summary.clone();
    for n in [
        "pf re-push after 1% edits",
        "pf re-push after 1 MiB insertion",
    ] {
        if let Some(r) = get(n) {
            summary.push((
                format!("{n}: bytes sent / raw bytes"),
                r.wire.unwrap_or(0) as f64 / raw as f64,
            ));
        }
    }
    // Bytes sent per byte changed, for every tool of every edit scenario:
    // repository growth, and for pf also what it reported sending.
    for e in edits.iter() {
        let prefix = format!("after {}: ", e.label);
        for r in rows.iter().filter(|r| r.name.starts_with(&prefix)) {
            if let Some(g) = r.grew {
                summary.push((
                    format!("{}: repository growth / bytes changed", r.name),
                    g as f64 / e.changed as f64,
                ));
            }
            if let Some(w) = r.wire {
                summary.push((
                    format!("{}: bytes sent (as pf reports) / bytes changed", r.name),
                    w as f64 / e.changed as f64,
                ));
            }
        }
    }
    for l in levels.iter() {
        if let Some(r) = get(&format!("pf push text logs, zstd -{l}")) {
            summary.push((
                format!("text logs at zstd -{l}: bytes sent / raw bytes"),
                r.wire.unwrap_or(0) as f64 / text_raw as f64,
            ));
        }
    }
    println!(
        "\n| measurement | median s | MB/s (raw) | peak RSS MiB | bytes sent (pf) | repo growth | requests |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.2} | {:.1} | {:.1} | {} | {} | {} |",
            r.name.replace('|', "\\|"),
            r.secs,
            r.mbps,
            r.rss_mb,
            opt(r.wire),
            opt(r.grew),
            r.requests
                .map(|n| format!("{n:.0}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    if !edits.is_empty() {
        println!("\n| edit | bytes changed |\n|---|---:|");
        for e in edits.iter() {
            println!("| {} | {} |", e.label, e.changed);
        }
    }
    println!("\n| ratio | value |\n|---|---:|");
    for (k, v) in &summary {
        println!("| {} | {v:.3} |", k.replace('|', "\\|"));
    }
    let mut json = String::from("{\n  \"raw_bytes\": ");
    json.push_str(&raw.to_string());
    json.push_str(",\n  \"edits\": [");
    for (i, e) in edits.iter().enumerate() {
        json.push_str(&format!(
            "{}{{\"label\": {:?}, \"bytes_changed\": {}}}",
            if i > 0 { ", " } else { "" },
            e.label,
            e.changed
        ));
    }
    json.push_str("],\n  \"rows\": [\n");
    let null = |v: Option<u64>| v.map(|w| w.to_string()).unwrap_or_else(|| "null".into());
    for (i, r) in rows.iter().enumerate() {
        json.push_str(&format!(
            "    {{\"name\": {:?}, \"secs\": {:.4}, \"mb_per_s\": {:.2}, \"peak_rss_mib\": {:.1}, \"bytes_sent\": {}, \"repo_growth\": {}, \"requests\": {}}}{}\n",
            r.name,
            r.secs,
            r.mbps,
            r.rss_mb,
            null(r.wire),
            null(r.grew),
            r.requests
                .map(|n| format!("{n:.1}"))
                .unwrap_or_else(|| "null".into()),
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    json.push_str("  ],\n  \"ratios\": {\n");
    for (i, (k, v)) in summary.iter().enumerate() {
        // JSON has no NaN.
        let v = if v.is_finite() {
            format!("{v:.4}")
        } else {
            "null".into()
        };
        json.push_str(&format!(
            "    {k:?}: {v}{}\n",
            if i + 1 < summary.len() { "," } else { "" }
        ));
    }
    json.push_str("  }\n}\n");
    fs::write(root.join("results.json"), json).map_err(|e| e.to_string())?;
    eprintln!("\nwrote {}", root.join("results.json").display());
    Ok(())
}
