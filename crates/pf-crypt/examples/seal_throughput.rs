//! Quick seal/open throughput of 64 KiB chunks (not a test; figures for
//! the README): `cargo run --release -p pf-crypt --example seal_throughput`.

use std::time::Instant;

use pf_crypt::{DataKey, Sealer};

fn main() {
    let sealer = Sealer::new(&DataKey::generate().expect("random"), 3);
    let total = 256usize << 20;
    let chunk = 64usize << 10;
    let random = pf_testsupport::noise(total, 0x9e37_79b9_7f4a_7c15);
    let text: Vec<u8> = (0..total)
        .map(|i| b"agent log line: tool call ok; tokens=1234\n"[i % 42] ^ (((i / 4096) % 7) as u8))
        .collect();
    for (name, data) in [("incompressible", &random), ("compressible", &text)] {
        let t = Instant::now();
        for c in data.chunks(chunk) {
            std::hint::black_box(sealer.id(c));
        }
        let id_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for c in data.chunks(chunk) {
            std::hint::black_box(zstd::bulk::compress(c, 3).expect("zstd"));
        }
        let z_s = t.elapsed().as_secs_f64();
        let mib = total as f64 / (1 << 20) as f64;
        println!(
            "{name}: keyed id {:.0} MiB/s, zstd 3 {:.0} MiB/s",
            mib / id_s,
            mib / z_s
        );
        let t = Instant::now();
        let sealed: Vec<Vec<u8>> = data.chunks(chunk).map(|c| sealer.seal(c)).collect();
        let seal_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut n = 0usize;
        for s in &sealed {
            n += sealer.open(s, chunk).expect("open").len();
        }
        let open_s = t.elapsed().as_secs_f64();
        assert_eq!(n, total);
        let out: usize = sealed.iter().map(Vec::len).sum();
        let mib = total as f64 / (1 << 20) as f64;
        println!(
            "{name}: seal {:.0} MiB/s, open {:.0} MiB/s, sealed/plain {:.3} (one thread, 64 KiB chunks, zstd 3)",
            mib / seal_s,
            mib / open_s,
            out as f64 / total as f64
        );
    }
}
