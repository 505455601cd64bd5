//! [`Collective`] on Burn's `burn-collective` (feature `distributed`): peers as threads of
//! one process ([`BurnCollective::local`]), one per device of a process, alone or as one node
//! of processes on one or several machines joined through a coordinator
//! ([`BurnCollective::join`]; [`BurnCollective::node`]: one peer per process).
//!
//! The exchanged buffers are host `f32` vectors: they travel as Flex tensors whatever the
//! training backend (burn-collective moves a tensor to the host to send it across nodes
//! anyway). Across nodes burn-collective's orchestrator (started by rank 0 in its own
//! process) introduces the nodes, and the all-reduce itself runs peer to peer over
//! WebSockets (plain `ws://`, no authentication: trusted networks only).
//!
//! burn-collective's calls block without a time limit (a peer that dies can leave the others
//! waiting for ever), so every call here runs on a helper thread and is given up after
//! `timeout` with [`CollectiveError::Timeout`]; the process should then exit (the helper
//! thread stays blocked). After a failure every later call fails at once.

use crate::collective::{Collective, CollectiveError};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};
use burn_communication::Address;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

/// The backend the exchanged buffers travel as.
type Wire = s2s_tensor::backend::Flex;

/// How one process joins a run of several processes ([`BurnCollective::node`]).
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Processes in the run.
    pub nodes: usize,
    /// This process's rank, `0..nodes`; rank 0 starts the coordinator.
    pub rank: usize,
    /// The coordinator's `HOST:PORT` (rank 0 listens on PORT, on every interface).
    pub coordinator: String,
    /// The address the other processes reach this one at (default: this machine's address
    /// on the route to the coordinator).
    pub host: Option<String>,
    /// The port this process serves its share of the all-reduce on (default: the
    /// coordinator's port + 1 + rank).
    pub data_port: Option<u16>,
    /// The longest any exchange (joining included) may take.
    pub timeout: Duration,
}

/// One peer of a data-parallel run on burn-collective.
pub struct BurnCollective {
    id: PeerId,
    rank: usize,
    peers: usize,
    timeout: Duration,
    failed: Option<CollectiveError>,
}

impl BurnCollective {
    /// Peer `rank` of `peers` threads of this process (burn-collective's local all-reduce);
    /// every thread calls this, and it returns once all have. One group per process at a time.
    pub fn local(rank: usize, peers: usize, timeout: Duration) -> Result<Self, CollectiveError> {
        let config = CollectiveConfig::default().with_num_devices(peers);
        Self::register(rank, peers, config, timeout)
    }

    /// This process as one node of a run of `settings.nodes` processes, with one peer.
    /// Rank 0 starts the coordinator on the coordinator's port. Returns once every node has
    /// joined (or fails after `settings.timeout`).
    pub fn node(settings: &NodeSettings) -> Result<Self, CollectiveError> {
        let mut peers = Self::join(Some(settings), 1, settings.timeout)?;
        Ok(peers.remove(0))
    }

    /// The `devices` peers of this process (one per device, each to be driven by its own
    /// trainer), alone (`node: None`) or as one node of a run of several processes. The
    /// peers' ranks are `node.rank * devices + d`. Returns once every peer of every node has
    /// joined (or fails after `timeout`).
    pub fn join(
        node: Option<&NodeSettings>,
        devices: usize,
        timeout: Duration,
    ) -> Result<Vec<Self>, CollectiveError> {
        let devices = devices.max(1);
        let (config, first, peers) = match node {
            Some(settings) => (
                node_config(settings, devices)?,
                settings.rank * devices,
                settings.nodes * devices,
            ),
            None => (
                CollectiveConfig::default().with_num_devices(devices),
                0,
                devices,
            ),
        };
        // burn-collective returns from `register` once every local peer has registered: the
        // peers register side by side.
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..devices)
                .map(|d| {
                    let config = config.clone();
                    s.spawn(move || Self::register(first + d, peers, config, timeout))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a registering thread panicked"))
                .collect()
        })
    }

    fn register(
        rank: usize,
        peers: usize,
        config: CollectiveConfig,
        timeout: Duration,
    ) -> Result<Self, CollectiveError> {
        let id = PeerId::from(rank);
        let what = "joining the training group";
        with_timeout(what, timeout, move || {
            burn_collective::register::<Wire>(id, Default::default(), config)
                .map_err(|e| failed(what, e))
        })?;
        Ok(BurnCollective {
            id,
            rank,
            peers,
            timeout,
            failed: None,
        })
    }
}

impl Collective for BurnCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn peers(&self) -> usize {
        self.peers
    }

    fn all_reduce_sum(
        &mut self,
        values: Vec<f32>,
        what: &str,
    ) -> Result<Vec<f32>, CollectiveError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let id = self.id;
        let name = what.to_string();
        let result = with_timeout(what, self.timeout, move || {
            let n = values.len();
            let tensor =
                Tensor::<Wire, 1>::from_data(TensorData::new(values, [n]), &Default::default());
            let summed = burn_collective::all_reduce::<Wire>(
                id,
                tensor.into_primitive().tensor(),
                ReduceOperation::Sum,
            )
            .map_err(|e| failed(&name, e))?;
            let summed = Tensor::<Wire, 1>::from_primitive(TensorPrimitive::Float(summed));
            Ok(s2s_tensor::ops::to_vec_f32(summed))
        });
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }
}

/// Clears this process's burn-collective state, so that a new group can be formed (tests:
/// one local group after another).
pub fn reset() {
    burn_collective::reset_collective::<Wire>();
}

fn failed(what: &str, e: burn_collective::CollectiveError) -> CollectiveError {
    let text = format!("{e:?}");
    let message = if matches!(e, burn_collective::CollectiveError::LocalServerMissing) {
        // What a caller sees after burn-collective's own threads panicked, which they do
        // when a peer's connection closes.
        "the connection to the other processes broke (one stopped, crashed or lost its \
         network; burn-collective: LocalServerMissing)"
            .to_string()
    } else if text.contains("PeerLost") {
        format!("lost a peer (it stopped, crashed or lost its network; burn-collective: {text})")
    } else {
        format!("burn-collective: {text}")
    };
    CollectiveError::Failed {
        what: what.to_string(),
        message,
    }
}

/// Runs `f` on a helper thread and waits at most `timeout` for it. A panic in
/// burn-collective is reported as a failure; a call that does not return in time is left
/// blocked on its thread.
fn with_timeout<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl FnOnce() -> Result<T, CollectiveError> + Send + 'static,
) -> Result<T, CollectiveError> {
    let (send, recv) = mpsc::channel();
    std::thread::Builder::new()
        .name("s2s-collective".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = send.send(result);
        })
        .map_err(|e| CollectiveError::Failed {
            what: what.to_string(),
            message: format!("no thread: {e}"),
        })?;
    match recv.recv_timeout(timeout) {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(CollectiveError::Failed {
            what: what.to_string(),
            message: format!(
                "burn-collective panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            ),
        }),
        Err(_) => Err(CollectiveError::Timeout {
            what: what.to_string(),
            seconds: timeout.as_secs(),
        }),
    }
}

/// The configuration of one node of `settings` with `devices` local peers: the
/// coordinator's and this node's addresses, checked; rank 0 starts the coordinator.
fn node_config(
    settings: &NodeSettings,
    devices: usize,
) -> Result<CollectiveConfig, CollectiveError> {
    let NodeSettings {
        nodes,
        rank,
        ref coordinator,
        ..
    } = *settings;
    if nodes == 0 || rank >= nodes {
        return Err(CollectiveError::Join(format!(
            "--node-rank {rank} must be below --nodes {nodes}"
        )));
    }
    let coordinator_addr = resolve(coordinator)?;
    let port = coordinator_addr.port();
    let data_port = match settings.data_port {
        Some(p) => p,
        None => u16::try_from(port as usize + 1 + rank).map_err(|_| {
            CollectiveError::Join(format!(
                "no default data port above the coordinator's port {port}: pass --data-port"
            ))
        })?,
    };
    let host = match &settings.host {
        Some(h) => h.clone(),
        None => route_to(coordinator_addr)?,
    };
    // burn-collective panics on its own threads when a port is taken: check first.
    check_port_free(data_port, "--data-port")?;
    if rank == 0 {
        check_port_free(port, "the coordinator's port")?;
        start_coordinator(port)?;
    }
    let address = |text: String| {
        text.parse::<Address>()
            .map_err(|e| CollectiveError::Join(format!("address {text}: {e:?}")))
    };
    Ok(CollectiveConfig::default()
        .with_num_devices(devices)
        .with_num_nodes(nodes as u32)
        .with_global_address(address(format!("ws://{coordinator}"))?)
        .with_node_address(address(format!("ws://{host}:{data_port}"))?)
        .with_data_service_port(data_port)
        .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2)))
}

fn resolve(host_port: &str) -> Result<SocketAddr, CollectiveError> {
    host_port
        .to_socket_addrs()
        .map_err(|e| CollectiveError::Join(format!("--coordinator {host_port}: {e} (HOST:PORT)")))?
        .next()
        .ok_or_else(|| {
            CollectiveError::Join(format!("--coordinator {host_port}: no address (HOST:PORT)"))
        })
}

/// This machine's address on the route to `to` (no packet is sent).
fn route_to(to: SocketAddr) -> Result<String, CollectiveError> {
    let local = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(local)
        .and_then(|s| s.connect(to).map(|_| s))
        .and_then(|s| s.local_addr())
        .map_err(|e| {
            CollectiveError::Join(format!(
                "no route to the coordinator {to}: {e} (pass --node-host)"
            ))
        })?;
    Ok(socket.ip().to_string())
}

fn check_port_free(port: u16, what: &str) -> Result<(), CollectiveError> {
    TcpListener::bind(("0.0.0.0", port))
        .map(drop)
        .map_err(|e| CollectiveError::Join(format!("{what} {port} cannot be used: {e}")))
}

/// burn-collective's orchestrator on `port`, on a thread of its own with its own runtime,
/// for the rest of the process.
fn start_coordinator(port: u16) -> Result<(), CollectiveError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| CollectiveError::Join(format!("coordinator runtime: {e}")))?;
    std::thread::Builder::new()
        .name("s2s-coordinator".into())
        .spawn(move || runtime.block_on(burn_collective::start_global_orchestrator(port)))
        .map_err(|e| CollectiveError::Join(format!("coordinator thread: {e}")))?;
    Ok(())
}
