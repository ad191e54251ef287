//! A flaky link for tests: a network namespace of the test's own joined to this one by a
//! veth pair, a `tbf` rate limit on both ends, and a cut (the link set down) and mend.
//!
//! The outlet side (a stream client, the outlet agent, the till) runs in the namespace: a
//! thread that entered it (`Link::spawn`) or a command under `ip netns exec`
//! (`Link::command`). The service stays here and listens on the veth's address on this side.
//! The two addresses are a /30 of 10.213.0.0/16 on the pair's two ends; nothing else of the
//! host's network is touched. Dropping the `Link` deletes the namespace and with it the pair,
//! also when the test panics; namespaces left by a test process that was killed are deleted
//! by the next `Link::new`.
//!
//! On these machines `tbf` works and `netem` does not (no kernel module), so loss and delay
//! are not simulated. A cut is either the link going down (both ends lose carrier; the
//! outlet's sockets see nothing, and neither does the service's) or, where nftables is
//! installed (`scripts/services.sh` installs it), every packet dropped in the namespace while
//! the link stays up: a broadband line that goes silent, which no end is told of.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

const PREFIX: &str = "shelfsync-t";
const NFT_TABLE: &str = "shelfsync_cut";

/// How a cut was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The link set down.
    Down,
    /// Every packet dropped by nftables, the link up.
    Dropped,
}

/// Whether nftables can be used here.
pub fn nft_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("nft")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Moves the calling thread into the network namespace at `path` (`/run/netns/NAME`): every
/// socket it opens from then on is the namespace's.
pub fn enter(path: &str) {
    let ns = std::fs::File::open(path).expect("the namespace's file");
    // SAFETY: setns on this thread only, with a valid descriptor held open across it.
    let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
}

pub struct Link {
    pub ns: String,
    /// This side's end of the pair.
    host_if: String,
    /// This side's address (the service listens here) and the namespace's.
    pub host_addr: Ipv4Addr,
    pub ns_addr: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Deletes namespaces of earlier test processes that are gone (killed before their drop).
fn delete_stale() {
    let Ok(list) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            // What still runs inside (an agent the killed test started) holds it: end that
            // first, or the namespace and its link outlive the delete.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Link {
    /// A namespace joined by a veth pair limited to `rate_kbit` each way (`tbf`).
    pub fn new(rate_kbit: u32) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        delete_stale();
        let pid = std::process::id();
        let n = N.fetch_add(1, Ordering::Relaxed);
        // A /30 per link: the third octet from the process, the fourth from the link.
        let (third, fourth) = ((pid % 251) as u8, ((n % 63) * 4) as u8);
        let link = Self {
            ns: format!("{PREFIX}{pid}-{n}"),
            host_if: format!("ssh{}x{n}", pid % 1_000_000),
            host_addr: Ipv4Addr::new(10, 213, third, fourth + 1),
            ns_addr: Ipv4Addr::new(10, 213, third, fourth + 2),
        };
        link.make(rate_kbit)
            .unwrap_or_else(|e| panic!("making the test link {}: {e}", link.ns));
        link
    }

    fn make(&self, rate_kbit: u32) -> Result<(), String> {
        let (ns, host) = (self.ns.as_str(), self.host_if.as_str());
        let peer = format!("{host}p");
        ip(&["netns", "add", ns])?;
        ip(&["link", "add", host, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", ns])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", self.host_addr),
            "dev",
            host,
        ])?;
        ip(&["link", "set", host, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", ns];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{}/30", self.ns_addr), "dev", &peer])?;
        inside(&["link", "set", &peer, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        // Everything else through this side: an address on the end of another test link is
        // then reached too (this host delivers it locally; nothing is forwarded).
        inside(&[
            "route",
            "add",
            "default",
            "via",
            &self.host_addr.to_string(),
        ])?;
        // tbf: `rate` each way, a burst of a few packets, and at most 500 ms queued before
        // the link drops (a slow uplink's buffer).
        let rate = format!("{rate_kbit}kbit");
        let tbf = [
            "root", "tbf", "rate", &rate, "burst", "8kb", "latency", "500ms",
        ];
        run("tc", &[&["qdisc", "add", "dev", host][..], &tbf].concat())?;
        run(
            "tc",
            &[&["-n", ns, "qdisc", "add", "dev", &peer][..], &tbf].concat(),
        )?;
        Ok(())
    }

    /// Nothing passes either way until `mend`: by nftables drops in the namespace when
    /// `silent` and nftables is installed, else by setting the link down. Returns which.
    pub fn cut(&self, silent: bool) -> Cut {
        if silent && nft_available() {
            // Both directions, all but the namespace's loopback (the till talks to its agent
            // there).
            let rules = format!(
                "table inet {NFT_TABLE} {{\n chain input {{ type filter hook input priority 0; policy drop; iif lo accept; }}\n chain output {{ type filter hook output priority 0; policy drop; oif lo accept; }}\n}}\n"
            );
            self.nft(&rules).expect("dropping the link's packets");
            Cut::Dropped
        } else {
            ip(&["link", "set", &self.host_if, "down"]).expect("cutting the link");
            Cut::Down
        }
    }

    /// Ends a cut of either kind.
    pub fn mend(&self) {
        let _ = run(
            "ip",
            &[
                "netns", "exec", &self.ns, "nft", "delete", "table", "inet", NFT_TABLE,
            ],
        );
        ip(&["link", "set", &self.host_if, "up"]).expect("mending the link");
    }

    fn nft(&self, rules: &str) -> Result<(), String> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Runs `task` on a thread of its own inside the namespace, on a runtime of its own:
    /// every socket it opens is the namespace's.
    pub fn spawn<F, Fut>(&self, task: F) -> std::thread::JoinHandle<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future,
        Fut::Output: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            enter(&path);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime in the namespace")
                .block_on(task())
        })
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The namespace takes its end of the pair with it, and the pair this end.
        if let Err(e) = ip(&["netns", "del", &self.ns]) {
            eprintln!("deleting the test link: {e}");
        }
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
