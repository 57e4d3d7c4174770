//! A two-node cluster with TLS (rustls) on every connection: certificates from a test CA
//! for "localhost"; the client with the CA works end to end (which also needs the nodes'
//! storage feeds and each other over TLS); a client without the CA, or speaking plain
//! HTTP/2, gets no answer.

use journaldb::{Client, ClientOptions};
use journaldb_node::{ClusterNode, NodeConfig, NodeEntry, TlsConfig};

use crate::rt;

#[test]
fn a_tls_cluster_serves_clients_that_trust_its_ca_and_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let node_key = rcgen::KeyPair::generate().unwrap();
    let node_cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&node_key, &ca)
        .unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let tls = TlsConfig {
        cert: write("node.pem", node_cert.pem()),
        key: write("node.key", node_key.serialize_pem()),
        ca: write("ca.pem", ca.pem()),
    };
    rt().block_on(async {
        let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ports = [
            l1.local_addr().unwrap().port(),
            l2.local_addr().unwrap().port(),
        ];
        let entries: Vec<NodeEntry> = (0..2)
            .map(|i| NodeEntry {
                name: format!("n{i}"),
                listen: format!("127.0.0.1:{}", ports[i]),
                address: Some(format!("https://localhost:{}", ports[i])),
                partitions: vec![i as u32],
                storage: i == 1,
            })
            .collect();
        let config = |i: usize| NodeConfig {
            node: format!("n{i}"),
            data_dir: dir.path().join(format!("n{i}")),
            partitions: 2,
            topology_version: 1,
            cluster_id: None,
            nodes: entries.clone(),
            tls: Some(tls.clone()),
            vote_timeout_ms: None,
            storage_cache_mib: None,
            max_txn_age_ms: None,
            retention_ms: None,
            checkpoint_interval_ms: None,
        };
        assert_eq!(config(0).check(), Ok(()));
        let n0 = ClusterNode::start(config(0), l1).await.unwrap();
        let n1 = ClusterNode::start(config(1), l2).await.unwrap();

        let url = format!("https://localhost:{}", ports[0]);
        let options = ClientOptions::default().with_tls_ca(std::fs::read(&tls.ca).unwrap());
        let client = Client::connect_with(&url, options).await.unwrap();
        // Keys in both partitions: the storage replica (n1) follows n0's journal over TLS.
        let mut tx = client.begin();
        for i in 0..10 {
            tx.put(format!("k{i}"), format!("v{i}")).unwrap();
        }
        tx.commit().await.unwrap();
        let tx = client.begin();
        for i in 0..10 {
            let got = tx.get(format!("k{i}")).await.unwrap();
            assert_eq!(got.as_deref(), Some(format!("v{i}").as_bytes()));
        }

        let no_ca = Client::connect(&url).await.unwrap_err();
        assert!(no_ca.to_string().contains("CA"), "{no_ca}");
        let plain = Client::connect(&format!("http://localhost:{}", ports[0])).await;
        assert!(plain.is_err(), "plain HTTP/2 to a TLS node must fail");

        n0.shutdown().await.unwrap();
        n1.shutdown().await.unwrap();
    });
}
