//! `pf-hub-testserver --port N --token T [--page-size K]`: run the Hub test server by hand.
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let port = get("--port").and_then(|p| p.parse().ok()).unwrap_or(0);
    let token = get("--token").unwrap_or_else(|| "hf_test_token".into());
    let page = get("--page-size")
        .and_then(|p| p.parse().ok())
        .unwrap_or(50);
    let s = pf_hub_testserver::HubServer::start_on(port, &token, page);
    println!("HF_ENDPOINT={}", s.url());
    loop {
        std::thread::park();
    }
}
