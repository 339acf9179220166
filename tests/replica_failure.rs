//! A replica that stops is skipped: reads go to the other replica (or the
//! primary) without a single client error. (Own binary: it stops a node.)

mod common;

use common::{connect, start_proxy, with_cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_is_skipped_without_client_errors() {
    let addr = start_proxy("routing: { load_balance: round_robin }\n");
    let client = connect(addr).await;
    let stopped_port = with_cluster(|c| {
        let replica = &c.replicas()[0];
        c.stop_node(replica).unwrap();
        replica.port
    });
    let mut ports = Vec::new();
    for _ in 0..30 {
        let rows = client
            .simple_query("SELECT inet_server_port(), pg_is_in_recovery()")
            .await
            .expect("reads keep working while a replica is down");
        for message in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                ports.push(row.get(0).unwrap_or_default().to_owned());
            }
        }
    }
    assert_eq!(ports.len(), 30);
    assert!(!ports.contains(&stopped_port.to_string()), "{ports:?}");
    with_cluster(|c| c.start_node(&c.replicas()[0])).unwrap();
}
