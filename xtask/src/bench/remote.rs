//! The rows beyond the file backend: what each zstd level costs and saves,
//! and pf against a local docker-registry (OCI) and moto (S3).

use std::fs;

use super::measure::{timed, Runner};
use super::{data, servers, Ctx};

/// The zstd level rows; returns the raw bytes of the text directory.
pub fn level_rows(c: &Ctx, r: &mut Runner, levels: &[i32], size: u64) -> Result<u64, String> {
    let Ctx {
        dd,
        ww,
        pfs,
        fresh,
        mb,
        root,
        ..
    } = c;
    let mb = *mb;
    // The zstd level: only compressible bytes feel it (incompressible blobs
    // are stored as raw blocks), so each level also pushes a text-only
    // directory of chat-log-like JSON lines (1/16 of --size).
    for l in levels {
        r.one(
            mb,
            &format!("pf push (first, file), zstd -{l}"),
            fresh,
            &format!(
                "{pfs} -q --json --zstd-level {l} --store {ww}/store push {dd} file://{ww}/repo"
            ),
            None,
        )?;
    }
    let text = root.join("text");
    if !levels.is_empty() {
        data::generate_text(&text, size / 16)?;
    }
    let text_raw = data::du(&text);
    let text_mb = text_raw as f64 / 1e6;
    let tt = fs::canonicalize(&text)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    for l in levels {
        r.one(
            text_mb,
            &format!("pf push text logs, zstd -{l}"),
            fresh,
            &format!(
                "{pfs} -q --json --zstd-level {l} --store {ww}/store push {tt} file://{ww}/repo"
            ),
            None,
        )?;
    }
    Ok(text_raw)
}

/// The OCI rows against a local docker-registry.
pub fn oci_rows(c: &Ctx, r: &mut Runner) -> Result<servers::Registry, String> {
    let Ctx {
        dd,
        ww,
        pfs,
        fresh,
        mb,
        ..
    } = c;
    let mb = *mb;
    let reg = servers::Registry::start();
    let h = reg.host().to_string();
    let reg_log = Some(reg.log());
    // A new repository per run (the shell expands the name), so every
    // run uploads everything; the store is fresh too, as for the file row.
    r.one(
        mb,
        "pf push (first, oci)",
        fresh,
        &format!("{pfs} -q --json --store {ww}/store push {dd} oci://{h}/bench/r$(date +%s%N):v1"),
        reg_log,
    )?;
    // One more push, for the pull rows below; it also shows where the
    // CPU goes: pf's own time and the registry's (from /proc).
    let reg_before = reg.cpu_secs();
    let m = timed(&format!(
        "{fresh} && {pfs} -q --json --store {ww}/store push {dd} oci://{h}/bench/pull:v1"
    ))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "    oci push CPU: pf {:.2} s, registry {:.2} s, wall {:.2} s ({cores} cores: {:.2} s of CPU available)",
        m.cpu_secs,
        reg.cpu_secs() - reg_before,
        m.secs,
        cores as f64 * m.secs
    );
    r.one(
        mb,
        "pf pull (empty store) + restore, oci",
        &format!("rm -rf {ww}/store2 {ww}/out"),
        &format!(
            "{pfs} -q --json --store {ww}/store2 pull oci://{h}/bench/pull:v1 --into {ww}/out"
        ),
        reg_log,
    )?;
    // The registry's floor: the whole snapshot as one tar.zst blob sent
    // with a single streamed PUT by curl (digest computed in the setup),
    // i.e. the leanest possible client in front of the same registry.
    r.one(
        mb,
        "curl PUT of the tar.zst (one blob)",
        &format!(
            "{fresh} && tar -C {dd} -cf - . | zstd -q -3 -T0 > {ww}/snap.tar.zst && sha256sum {ww}/snap.tar.zst | cut -d' ' -f1 > {ww}/snap.sha"
        ),
        &format!(
            "loc=$(curl -sf -o /dev/null -D - -X POST http://{h}/v2/bench/curl$(date +%s%N)/blobs/uploads/ | tr -d '\\r' | sed -n 's/^[Ll]ocation: //p') && curl -sf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T {ww}/snap.tar.zst \"$loc&digest=sha256:$(cat {ww}/snap.sha)\""
        ),
        reg_log,
            )?;
    Ok(reg)
}

/// The S3 rows against a local moto server.
pub fn s3_rows(c: &Ctx, r: &mut Runner) -> Result<servers::Moto, String> {
    let Ctx {
        dd,
        ww,
        pfs,
        fresh,
        mb,
        ..
    } = c;
    let mb = *mb;
    let moto = servers::Moto::start();
    let env = moto.env();
    let bucket = moto.bucket();
    let log = Some(moto.log());
    r.one(
        mb,
        "pf push (first, s3)",
        fresh,
        &format!(
            "{env} {pfs} -q --json --store {ww}/store push {dd} s3://{bucket}/r$(date +%s%N):v1"
        ),
        log,
    )?;
    timed(&format!(
        "{fresh} && {env} {pfs} -q --json --store {ww}/store push {dd} s3://{bucket}/pull:v1"
    ))?;
    r.one(
        mb,
        "pf pull (empty store) + restore, s3",
        &format!("rm -rf {ww}/store2 {ww}/out"),
        &format!(
            "{env} {pfs} -q --json --store {ww}/store2 pull s3://{bucket}/pull:v1 --into {ww}/out"
        ),
        log,
    )?;
    Ok(moto)
}
