//! `cargo xtask bench`: pf push/pull against baselines on the same data, in
//! the same run (ratios, medians of `--runs` runs). Prints a table and writes
//! `target/bench/results.json`. Benchmarks print figures; they never fail on
//! timing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Opts {
    size: u64,
    runs: usize,
    /// Also benchmark the OCI backend against a local docker-registry.
    oci: bool,
    /// Also benchmark the S3 backend against a local moto server.
    s3: bool,
    /// zstd levels to compare on a first push (whole snapshot and its
    /// compressible part); empty: no level rows.
    levels: Vec<i32>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        size: 1 << 30,
        runs: 3,
        oci: false,
        s3: false,
        levels: vec![1, 3, 6, 9],
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--size" => {
                let v = args.get(i + 1).ok_or("--size needs a value")?;
                o.size = parse_size(v)?;
                i += 1;
            }
            "--runs" => {
                o.runs = args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .ok_or("--runs needs a number")?;
                i += 1;
            }
            "--backend" => {
                let v = args.get(i + 1).ok_or("--backend needs a value")?;
                // The file backend always runs: it is the reference row.
                // Repeatable, or comma-separated.
                for b in v.split(',') {
                    match b {
                        "file" => {}
                        "oci" => o.oci = true,
                        "s3" => o.s3 = true,
                        _ => return Err(format!("--backend {b}: one of file, oci, s3")),
                    }
                }
                i += 1;
            }
            "--levels" => {
                let v = args.get(i + 1).ok_or("--levels needs a value")?;
                o.levels = if v == "none" {
                    vec![]
                } else {
                    v.split(',')
                        .map(|l| match l.parse::<i32>() {
                            Ok(n) if (1..=22).contains(&n) => Ok(n),
                            _ => Err(format!("--levels {l}: a zstd level 1..=22")),
                        })
                        .collect::<Result<_, _>>()?
                };
                i += 1;
            }
            other => return Err(format!("unknown bench option {other}")),
        }
        i += 1;
    }
    Ok(o)
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mul) = if let Some(n) = s.strip_suffix("GiB") {
        (n, 1u64 << 30)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else {
        (s, 1)
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n * mul)
        .map_err(|_| format!("bad size {s:?} (e.g. 1GiB, 256MiB)"))
}

/// Deterministic xorshift bytes; `compressible` mixes in repeated text.
fn fill(buf: &mut [u8], seed: u64, compressible: bool) {
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

fn write_file(p: &Path, len: u64, seed: u64, compressible: bool) -> Result<(), String> {
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
fn generate(dir: &Path, size: u64) -> Result<(), String> {
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
fn generate_text(dir: &Path, size: u64) -> Result<(), String> {
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

fn du(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            n += if md.is_dir() { du(&e.path()) } else { md.len() };
        }
    }
    n
}

/// A server process on 127.0.0.1, logging to a file, killed on drop.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Server {
    /// A port free right now on 127.0.0.1.
    fn free_port() -> Result<u16, String> {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())
    }

    /// Spawns `cmd` (which must listen on `port`) with stdout and stderr in
    /// `log`, and waits until it accepts connections.
    fn spawn(name: &str, mut cmd: Command, port: u16, log: &Path) -> Result<Server, String> {
        let log = fs::File::create(log).map_err(|e| e.to_string())?;
        let child = cmd
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{name}: {e} (run `cargo xtask servers install`)"))?;
        let server = Server { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(format!("{name} did not listen on 127.0.0.1:{port}"))
    }

    /// User + system CPU seconds the process has used so far.
    fn cpu_secs(&self) -> f64 {
        let stat =
            fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A docker-registry (CNCF distribution) on 127.0.0.1.
struct Registry {
    server: Server,
    host: String,
}

impl Registry {
    fn start(dir: &Path) -> Result<Registry, String> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir.join("storage")).map_err(|e| e.to_string())?;
        let port = Server::free_port()?;
        let cfg = dir.join("config.yml");
        fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: pf-bench\n",
                dir.join("storage").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&cfg);
        let server = Server::spawn("docker-registry", cmd, port, &dir.join("registry.log"))?;
        Ok(Registry {
            host: format!("127.0.0.1:{}", server.port),
            server,
        })
    }

    /// User + system CPU seconds the registry process has used so far.
    fn cpu_secs(&self) -> f64 {
        self.server.cpu_secs()
    }
}

/// A moto S3 server on 127.0.0.1 with a `bench` bucket.
struct Moto {
    _server: Server,
    endpoint: String,
}

impl Moto {
    fn start(dir: &Path) -> Result<Moto, String> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let port = Server::free_port()?;
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let server = Server::spawn("moto_server", cmd, port, &dir.join("moto.log"))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-X", "PUT"])
            .arg(format!("{endpoint}/bench"))
            .status()
            .map_err(|e| format!("curl: {e}"))?
            .success();
        if !ok {
            return Err("creating the bench bucket on moto failed".into());
        }
        Ok(Moto {
            _server: server,
            endpoint,
        })
    }
}

struct Measure {
    secs: f64,
    rss_kb: u64,
    /// User + system CPU seconds of the command and its children.
    cpu_secs: f64,
    stdout: String,
}

/// Runs `sh -c cmd` under /usr/bin/time, returning wall time and peak RSS.
fn timed(cmd: &str) -> Result<Measure, String> {
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "RSS_KB=%M\nCPU_S=%U %S", "sh", "-c", cmd])
        .output()
        .map_err(|e| format!("/usr/bin/time: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("`{cmd}` failed: {stderr}"));
    }
    let rss_kb = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RSS_KB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let cpu_secs = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("CPU_S="))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    Ok(Measure {
        secs,
        rss_kb,
        cpu_secs,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// One timed command of the bench.
struct Job<'a> {
    name: String,
    /// Raw megabytes the command moves (for MB/s).
    mb: f64,
    /// Run (untimed) before each timed run; empty: none.
    setup: String,
    cmd: String,
    /// A server log with one line per request, to count requests.
    log: Option<&'a Path>,
}

/// Median of the per-run ratios `base[i] / pf[i]` (throughput of pf
/// relative to the baseline, from runs made back to back).
fn paired_ratio(base: &[f64], pf: &[f64]) -> f64 {
    let r: Vec<f64> = base.iter().zip(pf).map(|(b, p)| b / p).collect();
    if r.is_empty() {
        f64::NAN
    } else {
        median(r)
    }
}

struct Row {
    name: String,
    secs: f64,
    mbps: f64,
    rss_mb: f64,
    wire: Option<u64>,
    /// HTTP requests the server logged per run (remote backends).
    requests: Option<f64>,
}

/// Requests logged so far in a server log with one line per request.
fn logged_requests(log: &Path) -> u64 {
    fs::read_to_string(log)
        .map(|t| t.lines().filter(|l| l.contains(" HTTP/1.1\"")).count() as u64)
        .unwrap_or(0)
}

fn json_field(s: &str, key: &str) -> Option<u64> {
    let i = s.find(&format!("\"{key}\":"))?;
    s[i + key.len() + 3..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

/// Entry point.
pub fn bench(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let root = PathBuf::from("target/bench");
    let data = root.join("data");
    fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    eprintln!("==> building pf (release)");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-q", "-p", "pf-cli"])
        .args(match (o.oci, o.s3) {
            (true, true) => &["--features", "oci,s3"][..],
            (true, false) => &["--features", "oci"][..],
            (false, true) => &["--features", "s3"][..],
            (false, false) => &[],
        })
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err("building pf failed".into());
    }
    let pf = fs::canonicalize("target/release/pf").map_err(|e| e.to_string())?;
    eprintln!(
        "==> generating {} MiB snapshot in {}",
        o.size >> 20,
        data.display()
    );
    generate(&data, o.size)?;
    let raw = du(&data);
    let mb = raw as f64 / 1e6;
    let d = fs::canonicalize(&data).map_err(|e| e.to_string())?;
    let w = fs::canonicalize(&root)
        .map_err(|e| e.to_string())?
        .join("work");
    let (dd, ww, pfs) = (
        d.display().to_string(),
        w.display().to_string(),
        pf.display().to_string(),
    );
    let mut rows: Vec<Row> = Vec::new();
    // `log`: a server log with one line per request, to count requests;
    // `mb`: the raw megabytes the command moves (for MB/s).
    // Runs `jobs` `o.runs` times, interleaved (a, b, a, b, ...), so jobs
    // compared with each other see the same machine; adds a row per job and
    // returns each job's times and last stdout.
    let run_jobs = |jobs: &[Job], rows: &mut Vec<Row>| -> Result<Vec<(Vec<f64>, String)>, String> {
        let mut times = vec![Vec::new(); jobs.len()];
        let mut rss = vec![0; jobs.len()];
        let mut last = vec![String::new(); jobs.len()];
        let mut requests = vec![0; jobs.len()];
        for _ in 0..o.runs {
            for (j, job) in jobs.iter().enumerate() {
                if !job.setup.is_empty() {
                    timed(&job.setup)?;
                }
                let _ = Command::new("sync").status();
                let before = job.log.map(logged_requests).unwrap_or(0);
                let m = timed(&job.cmd)?;
                // The server may log a request just after answering it.
                if job.log.is_some() {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
                requests[j] += job.log.map(logged_requests).unwrap_or(0) - before;
                times[j].push(m.secs);
                rss[j] = rss[j].max(m.rss_kb);
                last[j] = m.stdout;
            }
        }
        for (j, job) in jobs.iter().enumerate() {
            let secs = median(times[j].clone());
            let wire = json_field(&last[j], "wire_bytes_uploaded")
                .or_else(|| json_field(&last[j], "wire_bytes_fetched"));
            eprintln!(
                "    {:<34} {secs:>7.2}s  {:>8.1} MB/s  rss {:>6.1} MiB",
                job.name,
                job.mb / secs,
                rss[j] as f64 / 1024.0
            );
            rows.push(Row {
                name: job.name.clone(),
                secs,
                mbps: job.mb / secs,
                rss_mb: rss[j] as f64 / 1024.0,
                wire,
                requests: job.log.map(|_| requests[j] as f64 / o.runs as f64),
            });
        }
        Ok(times.into_iter().zip(last).collect())
    };
    let run_on = |name: &str,
                  mb: f64,
                  setup: &str,
                  cmd: &str,
                  log: Option<&Path>,
                  rows: &mut Vec<Row>|
     -> Result<String, String> {
        let job = Job {
            name: name.into(),
            mb,
            setup: setup.into(),
            cmd: cmd.into(),
            log,
        };
        let mut out = run_jobs(&[job], rows)?;
        Ok(out.pop().map(|(_, stdout)| stdout).unwrap_or_default())
    };
    let run = |name: &str, setup: &str, cmd: &str, log: Option<&Path>, rows: &mut Vec<Row>| {
        run_on(name, mb, setup, cmd, log, rows)
    };
    let fresh = format!("rm -rf {ww} && mkdir -p {ww}");
    eprintln!(
        "==> baselines and pf on {:.0} MB ({} runs each, median)",
        mb, o.runs
    );
    run(
        "sha256sum (hashing limit)",
        "",
        &format!("find {dd} -type f -print0 | xargs -0 cat | sha256sum"),
        None,
        &mut rows,
    )?;
    run(
        "cp -r",
        &fresh,
        &format!("cp -r {dd} {ww}/copy"),
        None,
        &mut rows,
    )?;
    // The baselines work in their own directory, so they can run between
    // pf's runs without touching pf's repository.
    let bw = format!("{ww}-baseline");
    let bfresh = format!("rm -rf {bw} && mkdir -p {bw}");
    let push = format!("{pfs} -q --json --store {ww}/store push {dd} file://{ww}/repo");
    let first_push = run_jobs(
        &[
            Job {
                name: "tar | zstd -3 -T0".into(),
                mb,
                setup: bfresh.clone(),
                cmd: format!("tar -C {dd} -cf - . | zstd -q -3 -T0 > {bw}/snap.tar.zst"),
                log: None,
            },
            Job {
                name: "pf push (first, file)".into(),
                mb,
                setup: fresh.clone(),
                cmd: push.clone(),
                log: None,
            },
        ],
        &mut rows,
    )?;
    let push_ratio = paired_ratio(&first_push[0].0, &first_push[1].0);
    // The state for the following rows: one pushed version.
    timed(&format!("{fresh} && {push}"))?;
    run("pf re-push unchanged", "", &push, None, &mut rows)?;
    // 1% in-place edits in the large file, and a 1 MiB insertion in its middle.
    let edited = fs::canonicalize(&root)
        .map_err(|e| e.to_string())?
        .join("edited");
    let ed = edited.display().to_string();
    let prep_edit = format!(
        "rm -rf {ed} && cp -r {dd} {ed} && python3 -c \"import os\nf=open('{ed}/model.bin','r+b')\nn=os.path.getsize('{ed}/model.bin')\nfor i in range(100):\n  f.seek((i*7919*104729)%n); f.write(b'EDIT'*int(n/100/100/4))\n\""
    );
    timed(&prep_edit)?;
    run(
        "pf re-push after 1% edits",
        &format!("{fresh} && {push}"),
        &format!("{pfs} -q --json --store {ww}/store push {ed} file://{ww}/repo"),
        None,
        &mut rows,
    )?;
    let prep_insert = format!(
        "rm -rf {ed} && cp -r {dd} {ed} && python3 -c \"import os\np='{ed}/model.bin'\nd=open(p,'rb').read()\nm=len(d)//2\nopen(p,'wb').write(d[:m]+os.urandom(1<<20)+d[m:])\""
    );
    timed(&prep_insert)?;
    run(
        "pf re-push after 1 MiB insertion",
        &format!("{fresh} && {push}"),
        &format!("{pfs} -q --json --store {ww}/store push {ed} file://{ww}/repo"),
        None,
        &mut rows,
    )?;
    timed(&format!("{fresh} && {push}"))?;
    let pull = run_jobs(
        &[
            Job {
                name: "zstd -dc | tar -x".into(),
                mb,
                setup: format!(
                    "{bfresh} && tar -C {dd} -cf - . | zstd -q -3 -T0 > {bw}/snap.tar.zst && mkdir {bw}/x"
                ),
                cmd: format!("zstd -dc {bw}/snap.tar.zst | tar -C {bw}/x -xf -"),
                log: None,
            },
            Job {
                name: "pf pull (empty store) + restore".into(),
                mb,
                // Reads the repository once, as the baseline's setup has just
                // written its tar.zst: both then read warm input (the file
                // backend's push drops what it wrote from the page cache).
                setup: format!(
                    "rm -rf {ww}/store2 {ww}/out && find {ww}/repo -type f -exec cat {{}} + > /dev/null"
                ),
                cmd: format!(
                    "{pfs} -q --json --store {ww}/store2 pull file://{ww}/repo --into {ww}/out"
                ),
                log: None,
            },
        ],
        &mut rows,
    )?;
    let pull_ratio = paired_ratio(&pull[0].0, &pull[1].0);
    run(
        "pf pull (store has it) + restore",
        // A plain pull (no --into) keeps every blob in the store.
        &format!(
            "rm -rf {ww}/out && ([ -d {ww}/store3 ] || {pfs} -q --store {ww}/store3 pull file://{ww}/repo)"
        ),
        &format!("{pfs} -q --json --store {ww}/store3 pull file://{ww}/repo --into {ww}/out"),
        None,
        &mut rows,
    )?;
    run(
        "pf pull (store has previous version) + restore",
        // The store holds the original version; the repository then gets
        // the version with the 1 MiB insertion, which is pulled and restored.
        &format!(
            "{fresh} && {push} && {pfs} -q --store {ww}/store4 pull file://{ww}/repo && {pfs} -q --store {ww}/store push {ed} file://{ww}/repo"
        ),
        &format!("{pfs} -q --json --store {ww}/store4 pull file://{ww}/repo --into {ww}/out"),
        None,
        &mut rows,
    )?;
    // The zstd level: only compressible bytes feel it (incompressible blobs
    // are stored as raw blocks), so each level also pushes a text-only
    // directory of chat-log-like JSON lines (1/16 of --size).
    for l in &o.levels {
        run(
            &format!("pf push (first, file), zstd -{l}"),
            &fresh,
            &format!(
                "{pfs} -q --json --zstd-level {l} --store {ww}/store push {dd} file://{ww}/repo"
            ),
            None,
            &mut rows,
        )?;
    }
    let text = root.join("text");
    if !o.levels.is_empty() {
        generate_text(&text, o.size / 16)?;
    }
    let text_raw = du(&text);
    let text_mb = text_raw as f64 / 1e6;
    let tt = fs::canonicalize(&text)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    for l in &o.levels {
        run_on(
            &format!("pf push text logs, zstd -{l}"),
            text_mb,
            &fresh,
            &format!(
                "{pfs} -q --json --zstd-level {l} --store {ww}/store push {tt} file://{ww}/repo"
            ),
            None,
            &mut rows,
        )?;
    }
    let _registry = if o.oci {
        let reg = Registry::start(&root.join("registry"))?;
        let h = reg.host.clone();
        let reg_log = root.join("registry").join("registry.log");
        let reg_log = Some(reg_log.as_path());
        // A new repository per run (the shell expands the name), so every
        // run uploads everything; the store is fresh too, as for the file row.
        run(
            "pf push (first, oci)",
            &fresh,
            &format!(
                "{pfs} -q --json --store {ww}/store push {dd} oci://{h}/bench/r$(date +%s%N):v1"
            ),
            reg_log,
            &mut rows,
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
        run(
            "pf pull (empty store) + restore, oci",
            &format!("rm -rf {ww}/store2 {ww}/out"),
            &format!(
                "{pfs} -q --json --store {ww}/store2 pull oci://{h}/bench/pull:v1 --into {ww}/out"
            ),
            reg_log,
            &mut rows,
        )?;
        // The registry's floor: the whole snapshot as one tar.zst blob sent
        // with a single streamed PUT by curl (digest computed in the setup),
        // i.e. the leanest possible client in front of the same registry.
        run(
            "curl PUT of the tar.zst (one blob)",
            &format!(
                "{fresh} && tar -C {dd} -cf - . | zstd -q -3 -T0 > {ww}/snap.tar.zst && sha256sum {ww}/snap.tar.zst | cut -d' ' -f1 > {ww}/snap.sha"
            ),
            &format!(
                "loc=$(curl -sf -o /dev/null -D - -X POST http://{h}/v2/bench/curl$(date +%s%N)/blobs/uploads/ | tr -d '\\r' | sed -n 's/^[Ll]ocation: //p') && curl -sf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T {ww}/snap.tar.zst \"$loc&digest=sha256:$(cat {ww}/snap.sha)\""
            ),
            reg_log,
            &mut rows,
        )?;
        Some(reg)
    } else {
        None
    };
    let _moto = if o.s3 {
        let moto = Moto::start(&root.join("moto"))?;
        let env = format!(
            "env AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_ENDPOINT_URL={}",
            moto.endpoint
        );
        let log = root.join("moto").join("moto.log");
        let log = Some(log.as_path());
        run(
            "pf push (first, s3)",
            &fresh,
            &format!(
                "{env} {pfs} -q --json --store {ww}/store push {dd} s3://bench/r$(date +%s%N):v1"
            ),
            log,
            &mut rows,
        )?;
        timed(&format!(
            "{fresh} && {env} {pfs} -q --json --store {ww}/store push {dd} s3://bench/pull:v1"
        ))?;
        run(
            "pf pull (empty store) + restore, s3",
            &format!("rm -rf {ww}/store2 {ww}/out"),
            &format!(
                "{env} {pfs} -q --json --store {ww}/store2 pull s3://bench/pull:v1 --into {ww}/out"
            ),
            log,
            &mut rows,
        )?;
        Some(moto)
    } else {
        None
    };

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
    if o.oci {
        summary.push((
            "OCI push vs file push (throughput ratio)",
            ratio("pf push (first, oci)", "pf push (first, file)"),
        ));
    }
    if o.s3 {
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
    let level_rows: Vec<(String, f64)> = o
        .levels
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
    for r in &rows {
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
