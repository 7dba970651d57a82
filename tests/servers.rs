//! The test servers themselves (`tests/support/servers.rs`): the servers a test binary starts
//! are gone, directories included, once the binary exits; and a started Redis Cluster serves
//! every slot, a command sent to the wrong node being redirected to the right one.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::servers;

/// Started in a process of its own by the next test: starts every kind of server, prints
/// where they listen, and exits without stopping them.
#[test]
#[ignore = "run by `servers_stop_when_the_test_binary_exits`, in a process of its own"]
fn start_servers_and_exit() {
    println!("pid {}", std::process::id()); // after the harness's "test ... " on the same line
    let urls = [servers::postgres_url(), servers::redis_url()];
    let cluster = servers::redis_cluster_urls().unwrap_or_default();
    for url in urls.into_iter().flatten().chain(cluster.iter().map(String::as_str)) {
        println!("server {url}");
    }
}

/// The test harness ends a binary with `exit`, which runs no destructors; the servers must stop
/// anyway, and their temporary directories go with them.
#[test]
fn servers_stop_when_the_test_binary_exits() {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "start_servers_and_exit", "--nocapture", "--test-threads=1"])
        // The child starts servers of its own, whatever URLs this run was given.
        .env_remove("KEYGATE_POSTGRES_URL")
        .env_remove("KEYGATE_REDIS_URL")
        .env_remove("KEYGATE_REDIS_CLUSTER_URLS")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success(), "the child test failed:\n{out}");
    let pid = out
        .lines()
        .find_map(|l| Some(l.split_once("pid ")?.1))
        .unwrap_or_else(|| panic!("no pid in:\n{out}"))
        .trim()
        .to_owned();
    let ports: Vec<u16> = out
        .lines()
        .filter_map(|l| l.strip_prefix("server "))
        .map(|url| url.rsplit_once(':').unwrap().1.split('/').next().unwrap().parse().unwrap())
        .collect();
    if ports.is_empty() {
        return; // nothing installed: the child said so
    }
    let leftovers = || -> Vec<String> {
        let mut left: Vec<String> = ports
            .iter()
            .filter(|p| TcpStream::connect((Ipv4Addr::LOCALHOST, **p)).is_ok())
            .map(|p| format!("a server on port {p}"))
            .collect();
        let marker = format!("-{pid}-");
        for entry in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("keygate-") && name.contains(&marker) {
                left.push(entry.path().display().to_string());
            }
        }
        left
    };
    let exited = Instant::now();
    while !leftovers().is_empty() {
        let left = leftovers();
        assert!(exited.elapsed() < Duration::from_secs(15), "still there 15 s after the binary exited: {left:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The cluster a test can ask for: three masters sharing all 16384 slots; a key's command is
/// answered by the node that owns its slot, and the other nodes redirect to it.
#[cfg(feature = "redis")]
#[test]
fn a_redis_cluster_serves_every_slot() {
    let Some(urls) = servers::redis_cluster_urls() else { return };
    let connect =
        |url: &str| redis::Client::open(url).unwrap().get_connection_with_timeout(Duration::from_secs(2)).unwrap();
    let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut connect(&urls[0])).unwrap();
    for expected in ["cluster_state:ok", "cluster_slots_assigned:16384", "cluster_known_nodes:3", "cluster_size:3"] {
        assert!(info.contains(expected), "{expected} missing from:\n{info}");
    }

    let mut owners = std::collections::BTreeSet::new();
    let mut redirected = 0;
    for i in 0..12 {
        let (key, value) = (format!("kgtest-cluster-{i}"), format!("v{i}"));
        // Sent to the first node; followed once to the owner when that is another node.
        let mut node = urls[0].clone();
        let set: redis::RedisResult<()> =
            redis::cmd("SET").arg(&key).arg(&value).arg("EX").arg(60).query(&mut connect(&node));
        if let Err(e) = set {
            let (addr, _slot) = e.redirect_node().unwrap_or_else(|| panic!("SET {key}: {e}"));
            node = format!("redis://{addr}/");
            redirected += 1;
            let () = redis::cmd("SET").arg(&key).arg(&value).arg("EX").arg(60).query(&mut connect(&node)).unwrap();
        }
        let read: String = redis::cmd("GET").arg(&key).query(&mut connect(&node)).unwrap();
        assert_eq!(read, value);
        let _: i64 = redis::cmd("DEL").arg(&key).query(&mut connect(&node)).unwrap();
        owners.insert(node);
    }
    assert!(redirected > 0 && owners.len() == 3, "12 keys on {} nodes, {redirected} redirected", owners.len());
}
