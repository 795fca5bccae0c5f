//! What the receiver's test binaries share.

/// A receiver on `addr` (port 0: any) serving `dir` from its own runtime,
/// so a test can stop it mid-upload; returns its address and the runtime.
pub fn serving(
    dir: &std::path::Path,
    addr: &str,
) -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = fileuploader_server::Receiver::new(dir).unwrap();
    rt.spawn(async move {
        receiver
            .serve(tokio::net::TcpListener::from_std(listener).unwrap())
            .await
    });
    (addr, rt)
}
