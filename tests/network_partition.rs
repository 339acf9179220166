//! A replica cut off at the network level: the test reaches it through a
//! network namespace and a veth pair it makes itself (`ip netns`, so it
//! runs as root), then takes the link down. Packets vanish without a reset,
//! the case where only timeouts help: a query in flight there must end with
//! an error (`server_tcp_user_timeout`), the monitor must mark the node
//! down (`monitor.timeout`), and new reads must go elsewhere without
//! waiting on it. (Own binary: it changes a node's reachability.)

mod common;

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{first_value, proxy_config, spawn_watched_proxy, with_cluster};
use pgsplit::monitor::NodeState;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace joined to this one by a veth pair: 10.213.N.1 here,
/// 10.213.N.2 inside. Removed on drop.
struct Namespace {
    name: String,
    peer: String,
    inside: String,
}

impl Namespace {
    fn create() -> Namespace {
        let n = std::process::id() % 250 + 1;
        let name = format!("pgsplit-t{n}");
        let (host, peer) = (format!("psh{n}"), format!("psp{n}"));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &name]);
        ip(&["addr", "add", &format!("10.213.{n}.1/30"), "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        let inside = format!("10.213.{n}.2");
        let address = format!("{inside}/30");
        let steps: [Vec<&str>; 3] = [
            vec!["addr", "add", &address, "dev", &peer],
            vec!["link", "set", &peer, "up"],
            vec!["link", "set", "lo", "up"],
        ];
        for args in steps {
            let mut full = vec!["netns", "exec", &name, "ip"];
            full.extend(args.iter().copied());
            ip(&full);
        }
        Namespace { name, peer, inside }
    }

    /// Takes the far end down: packets to it are dropped, nothing answers.
    fn cut(&self) {
        ip(&[
            "netns", "exec", &self.name, "ip", "link", "set", &self.peer, "down",
        ]);
    }

    fn heal(&self) {
        ip(&[
            "netns", "exec", &self.name, "ip", "link", "set", &self.peer, "up",
        ]);
    }

    /// Listens inside the namespace and relays each connection to
    /// `127.0.0.1:target` out here; returns the port it listens on.
    fn forward_to(&self, target: u16) -> u16 {
        let ns = File::open(format!("/var/run/netns/{}", self.name)).expect("netns file");
        let inside = self.inside.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let home = File::open("/proc/thread-self/ns/net").expect("own netns");
            // A socket belongs to the namespace it was made in, whatever the
            // thread does next: listen inside, then come back out to connect.
            // SAFETY: setns on this thread only, with valid namespace fds.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let listener = TcpListener::bind((inside.as_str(), 0)).expect("listen inside");
            // SAFETY: as above.
            assert_eq!(
                unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            tx.send(listener.local_addr().expect("port").port())
                .expect("report port");
            for client in listener.incoming().flatten() {
                if let Ok(server) = TcpStream::connect(("127.0.0.1", target)) {
                    relay(client, server);
                }
            }
        });
        rx.recv().expect("forwarder started")
    }
}

/// Copies bytes both ways until either side closes.
fn relay(a: TcpStream, b: TcpStream) {
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        pipe(a, b2);
        pipe(b, a2);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

async fn server_port(client: &tokio_postgres::Client) -> Result<String, tokio_postgres::Error> {
    let rows = client.simple_query("SELECT inet_server_port()").await?;
    Ok(first_value(&rows).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_by_the_network_is_given_up_on_by_timeouts() {
    let namespace = Namespace::create();
    let replica_port = with_cluster(|c| c.replicas()[0].port);
    let forwarded = namespace.forward_to(replica_port);
    let mut config = proxy_config(
        "server_connect_timeout: 1s\nserver_tcp_user_timeout: 2s\nrouting: { route: replica }\n",
    );
    config.nodes.truncate(2);
    config.nodes[1].host = namespace.inside.clone();
    config.nodes[1].port = forwarded;
    if let Some(monitor) = config.monitor.as_mut() {
        monitor.interval = Duration::from_millis(200);
        monitor.timeout = Duration::from_millis(500);
        monitor.fail_after = 2;
        monitor.recover_after = 1;
    }
    let proxy = spawn_watched_proxy(config);
    let addr: SocketAddr = proxy.addr;
    let reader = common::connect(addr).await;
    assert_eq!(
        server_port(&reader).await.unwrap(),
        replica_port.to_string()
    );

    // A query running on the replica when the link goes.
    let in_flight = tokio::spawn(async move {
        let client = common::connect(addr).await;
        let result = client.simple_query("SELECT pg_sleep(5)").await;
        (result.err().and_then(|e| e.code().cloned()), Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    namespace.cut();
    let cut_at = Instant::now();

    // The monitor's checks time out: the node is marked down.
    let topology = &proxy.shared.topology;
    while topology.load().nodes[1].state != NodeState::Down {
        assert!(
            cut_at.elapsed() < Duration::from_secs(5),
            "the cut-off node was not marked down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let marked_down = cut_at.elapsed();

    // New reads go to the primary, without waiting on the lost node.
    let client = common::connect(addr).await;
    for _ in 0..5 {
        let started = Instant::now();
        let port = server_port(&client).await.expect("reads are served");
        assert_ne!(port, replica_port.to_string());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    // The query in flight ends with a connection error, not a hang.
    let (code, ended) = tokio::time::timeout(Duration::from_secs(15), in_flight)
        .await
        .expect("the in-flight query hung")
        .unwrap();
    let code = code.expect("the in-flight query failed");
    assert!(code.code().starts_with("08"), "{code:?}");
    let failed_after = ended - cut_at;
    assert!(failed_after < Duration::from_secs(8), "{failed_after:?}");
    eprintln!("marked down after {marked_down:?}; in-flight query failed after {failed_after:?}");

    // Healed: the replica is readmitted and reads reach it again.
    namespace.heal();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if server_port(&client).await.ok() == Some(replica_port.to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "the healed replica got no reads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
