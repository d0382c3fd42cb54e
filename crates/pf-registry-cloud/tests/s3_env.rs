//! Configuration from the standard AWS environment variables only (its own
//! test binary: it sets process-wide env vars).
#![cfg(feature = "s3")]

use std::sync::Arc;

use pf_cas::MemoryStore;
use pf_registry_conformance::ImageSpec;
use pf_registry_core::{Config, ImageRef, Registry, SignedImage};
use pf_testsupport::S3Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_env_vars_configure_the_client() {
    let server = S3Server::start_seaweedfs();
    std::env::set_var("AWS_ENDPOINT_URL", &server.endpoint);
    std::env::set_var("AWS_ACCESS_KEY_ID", &server.access_key);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", &server.secret_key);
    std::env::set_var("AWS_REGION", &server.region);
    std::env::remove_var("AWS_SESSION_TOKEN");

    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(51, 2).build(&*src, "env");
    let signed = SignedImage::new(&img.manifest, None);
    let r = ImageRef::parse(&format!("s3://{}/env/img:v1", server.bucket)).expect("ref");
    let c = Config::default();
    let rep = pf_registry_cloud::s3::open(&r, &c)
        .expect("open")
        .push(src.clone(), &signed)
        .await
        .expect("push with env credentials");
    let pulled =
        pf_registry_cloud::s3::open(&ImageRef::parse(&rep.resolved).expect("resolved"), &c)
            .expect("open")
            .pull(Arc::new(MemoryStore::new()))
            .await
            .expect("pull by resolved ref");
    assert_eq!(pulled.manifest, img.manifest);

    // Plain conditional writes can be switched off for servers without them.
    let mut plain = c.clone();
    plain
        .options
        .insert("s3.conditional_put".into(), "false".into());
    for _ in 0..2 {
        pf_registry_cloud::s3::open(&r, &plain)
            .expect("open")
            .push(src.clone(), &signed)
            .await
            .expect("push without conditional writes");
    }
}
