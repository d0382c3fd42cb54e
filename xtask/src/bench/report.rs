//! The result: the table of rows, the ratios derived from them, and
//! `target/bench/results.json`.

use std::fs;
use std::path::Path;

use super::measure::Row;

/// What the ratios are computed from besides the rows.
pub struct Inputs<'a> {
    /// Throughput of pf's first push relative to tar|zstd (paired runs).
    pub push_ratio: f64,
    /// Throughput of pf's pull+restore relative to zstd -dc|tar -x.
    pub pull_ratio: f64,
    /// Whether the OCI rows ran.
    pub oci: bool,
    /// Whether the S3 rows ran.
    pub s3: bool,
    /// Raw bytes of the snapshot directory.
    pub raw: u64,
    /// zstd levels of the level rows.
    pub levels: &'a [i32],
    /// Raw bytes of the text directory.
    pub text_raw: u64,
}

/// Prints the table and the ratios, and writes `<root>/results.json`.
pub fn write(root: &Path, rows: &[Row], inputs: &Inputs) -> Result<(), String> {
    let Inputs {
        push_ratio,
        pull_ratio,
        oci,
        s3,
        raw,
        levels,
        text_raw,
    } = *inputs;
    let get = |n: &str| rows.iter().find(|r| r.name.starts_with(n));
    let ratio = |a: &str, b: &str| match (get(a), get(b)) {
        (Some(x), Some(y)) => y.secs / x.secs,
        _ => f64::NAN,
    };
    let mut summary = vec![
        (
            "first push vs tar|zstd (throughput ratio, median of paired runs)",
            push_ratio,
        ),
        (
            "pull+restore vs zstd -dc|tar -x (throughput ratio, median of paired runs)",
            pull_ratio,
        ),
    ];
    if oci {
        summary.push((
            "OCI push vs file push (throughput ratio)",
            ratio("pf push (first, oci)", "pf push (first, file)"),
        ));
    }
    if s3 {
        summary.push((
            "S3 push vs file push (throughput ratio)",
            ratio("pf push (first, s3)", "pf push (first, file)"),
        ));
    }
    if let (Some(p), Some(t), Some(c)) = (
        get("pf push (first, oci)"),
        get("tar | zstd"),
        get("curl PUT of the tar.zst"),
    ) {
        summary.push((
            "OCI push vs tar|zstd + one-blob curl PUT (throughput ratio)",
            (t.secs + c.secs) / p.secs,
        ));
    }
    if let (Some(a), Some(b)) = (get("pf re-push unchanged"), get("pf push (first")) {
        summary.push(("re-push unchanged / first push (time)", a.secs / b.secs));
    }
    for n in [
        "pf re-push after 1% edits",
        "pf re-push after 1 MiB insertion",
    ] {
        if let Some(r) = get(n) {
            summary.push((n, r.wire.unwrap_or(0) as f64 / raw as f64));
        }
    }
    let level_rows: Vec<(String, f64)> = levels
        .iter()
        .filter_map(|l| {
            let r = get(&format!("pf push text logs, zstd -{l}"))?;
            Some((
                format!("text logs at zstd -{l}: bytes sent / raw bytes"),
                r.wire.unwrap_or(0) as f64 / text_raw as f64,
            ))
        })
        .collect();
    let mut summary: Vec<(String, f64)> = summary
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    summary.extend(level_rows);
    println!("\n| measurement | median s | MB/s (raw) | peak RSS MiB | bytes sent | requests |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.2} | {:.1} | {:.1} | {} | {} |",
            r.name,
            r.secs,
            r.mbps,
            r.rss_mb,
            r.wire.map(|w| w.to_string()).unwrap_or_else(|| "-".into()),
            r.requests
                .map(|n| format!("{n:.0}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    println!("\n| ratio | value |\n|---|---:|");
    for (k, v) in &summary {
        println!("| {k} | {v:.3} |");
    }
    let mut json = String::from("{\n  \"raw_bytes\": ");
    json.push_str(&raw.to_string());
    json.push_str(",\n  \"rows\": [\n");
    for (i, r) in rows.iter().enumerate() {
        json.push_str(&format!(
            "    {{\"name\": {:?}, \"secs\": {:.4}, \"mb_per_s\": {:.2}, \"peak_rss_mib\": {:.1}, \"bytes_sent\": {}, \"requests\": {}}}{}\n",
            r.name,
            r.secs,
            r.mbps,
            r.rss_mb,
            r.wire.map(|w| w.to_string()).unwrap_or_else(|| "null".into()),
            r.requests
                .map(|n| format!("{n:.1}"))
                .unwrap_or_else(|| "null".into()),
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    json.push_str("  ],\n  \"ratios\": {\n");
    for (i, (k, v)) in summary.iter().enumerate() {
        json.push_str(&format!(
            "    {k:?}: {v:.4}{}\n",
            if i + 1 < summary.len() { "," } else { "" }
        ));
    }
    json.push_str("  }\n}\n");
    fs::write(root.join("results.json"), json).map_err(|e| e.to_string())?;
    eprintln!("\nwrote target/bench/results.json");
    Ok(())
}
