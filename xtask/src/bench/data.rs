//! The benchmark's input: a generated snapshot directory (compressible
//! messages, KV-like pages, duplicates, one large file) and chat-log-like
//! text for the zstd level rows.

use std::fs;
use std::io::Write;
use std::path::Path;

/// Deterministic xorshift bytes; `compressible` mixes in repeated text.
pub fn fill(buf: &mut [u8], seed: u64, compressible: bool) {
    let mut x = seed | 1;
    for (i, b) in buf.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = if compressible && (i / 64) % 4 != 0 {
            b"token "[i % 6]
        } else {
            x as u8
        };
    }
}

pub fn write_file(p: &Path, len: u64, seed: u64, compressible: bool) -> Result<(), String> {
    let mut f = fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut buf = vec![0u8; 4 << 20];
    let mut left = len;
    let mut s = seed;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        fill(&mut buf[..n], s, compressible);
        f.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    Ok(())
}

/// Builds the snapshot directory: small compressible files, KV-like pages,
/// duplicates, and one large file of half the size.
pub fn generate(dir: &Path, size: u64) -> Result<(), String> {
    if dir.join(".complete").exists()
        && fs::read_to_string(dir.join(".complete")).ok() == Some(size.to_string())
    {
        return Ok(());
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir.join("trace")).map_err(|e| e.to_string())?;
    fs::create_dir_all(dir.join("kv")).map_err(|e| e.to_string())?;
    let small_total = size / 32;
    let n_small = 2000u64;
    for i in 0..n_small {
        write_file(
            &dir.join(format!("trace/msg{i:05}.json")),
            small_total / n_small,
            i,
            true,
        )?;
    }
    let big = size / 2;
    let kv_total = size - big - small_total - (2 * (4 << 20));
    let page = (kv_total / 4).max(1 << 20);
    for i in 0..4 {
        write_file(&dir.join(format!("kv/page{i}.bin")), page, 1000 + i, false)?;
    }
    write_file(&dir.join("dup-a.bin"), 4 << 20, 7, false)?;
    write_file(&dir.join("dup-b.bin"), 4 << 20, 7, false)?;
    write_file(&dir.join("model.bin"), big, 99, false)?;
    fs::write(dir.join(".complete"), size.to_string()).map_err(|e| e.to_string())?;
    Ok(())
}

/// Builds `size` bytes of chat-log-like JSON lines in 32 KiB files: words
/// drawn log-uniformly from a fixed made-up vocabulary, so (unlike the
/// snapshot's repeated filler) higher zstd levels find more to save.
pub fn generate_text(dir: &Path, size: u64) -> Result<(), String> {
    if fs::read_to_string(dir.join(".complete")).ok() == Some(size.to_string()) {
        return Ok(());
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ren", "tu", "sha", "vo", "qui", "ne", "dar", "po", "li", "xe", "mon",
        "fa", "ti",
    ];
    let vocab: Vec<String> = (0..4096)
        .map(|_| {
            let n = 1 + next() % 4;
            (0..n).map(|_| SYLLABLES[(next() % 16) as usize]).collect()
        })
        .collect();
    const FILE: u64 = 32 << 10;
    let (mut written, mut line_no) = (0u64, 0u64);
    let mut file_no = 0u64;
    while written < size {
        let mut text = String::with_capacity(FILE as usize + 512);
        while (text.len() as u64) < FILE {
            let role = ["user", "assistant", "tool"][(next() % 3) as usize];
            text.push_str(&format!(
                "{{\"id\": {line_no}, \"role\": \"{role}\", \"text\": \""
            ));
            for w in 0..8 + next() % 40 {
                if w > 0 {
                    text.push(' ');
                }
                // Log-uniform rank: a few words are very common.
                let u = (next() % 1_000_000) as f64 / 1e6;
                let rank = (4096f64.powf(u) as usize).saturating_sub(1).min(4095);
                text.push_str(&vocab[rank]);
            }
            text.push_str("\"}\n");
            line_no += 1;
        }
        fs::write(dir.join(format!("log{file_no:05}.jsonl")), &text).map_err(|e| e.to_string())?;
        written += text.len() as u64;
        file_no += 1;
    }
    fs::write(dir.join(".complete"), size.to_string()).map_err(|e| e.to_string())
}

/// Bytes in the files under `p`.
pub fn du(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            n += if md.is_dir() { du(&e.path()) } else { md.len() };
        }
    }
    n
}
