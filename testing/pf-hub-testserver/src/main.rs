//! `pf-hub-testserver --port N --token T`: run the Hub test server by hand
//! (prints `HF_ENDPOINT=...`; Ctrl-C stops it).
#![forbid(unsafe_code)]

use clap::Parser;
use pf_hub_testserver::{HubConfig, HubServer, Token};

/// A Hugging Face Hub protocol test server.
#[derive(Parser)]
struct Args {
    /// Hub port on 127.0.0.1 (0: random).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Write token accepted as `Authorization: Bearer <token>`.
    #[arg(long, env = "HF_TOKEN", default_value = "hf_test_token")]
    token: String,
    /// User (namespace) owning the token.
    #[arg(long, default_value = pf_hub_testserver::DEFAULT_USER)]
    user: String,
    /// Tree/commit listing page size.
    #[arg(long, default_value_t = 50)]
    page_size: usize,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let cfg = HubConfig::default()
        .token(Token::write(a.token, a.user))
        .page_size(a.page_size)
        .port(a.port);
    let server = HubServer::start(cfg).await?;
    println!("HF_ENDPOINT={}", server.url());
    tokio::signal::ctrl_c().await?;
    drop(server);
    Ok(())
}
