//! A tiny Linux guest for QEMU (TCG, virtio-net): Debian's kernel plus a
//! busybox initramfs built per test around a shell script. The guest takes
//! its lease with udhcpc, runs the script, prints `GUEST-DONE` and powers
//! off; everything it prints on the serial console comes back as lines.
//!
//! `.ci/guest-kernel` prepares the kernel and modules in
//! `$CAPLOOP_GUEST_DIR` (default `/var/cache/caploop-guest`).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const MODULES: [&str; 8] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in @MODULES@; do insmod /lib/modules/$m.ko || echo "GUEST-ERROR insmod $m"; done
ip link set lo up; ip link set eth0 up
cat > /udhcpc.sh <<'EOS'
#!/bin/sh
case "$1" in
bound|renew)
  ip addr add $ip/$mask dev $interface
  [ -n "$router" ] && ip route add default via $router
  echo "LEASE ip=$ip router=$router dns=$dns mtu=$mtu"
  ;;
esac
EOS
chmod +x /udhcpc.sh
udhcpc -i eth0 -s /udhcpc.sh -n -q -t 10 -T 1 || echo "GUEST-ERROR no lease"
. /test.sh
echo GUEST-DONE
poweroff -f
"#;

/// Where the kernel and modules are, if prepared.
pub fn kernel_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(
        std::env::var_os("CAPLOOP_GUEST_DIR").unwrap_or_else(|| "/var/cache/caploop-guest".into()),
    );
    (dir.join("vmlinuz").is_file() && dir.join("modules/virtio_net.ko").is_file()).then_some(dir)
}

/// Whether the guest can run here: kernel prepared, QEMU and busybox and
/// cpio installed. Under CI (`CI` set) a missing piece is a failure, not a
/// skip: `.ci/run` installs them all.
pub fn available() -> bool {
    let ok = kernel_dir().is_some()
        && Path::new("/usr/bin/qemu-system-x86_64").exists()
        && Path::new("/bin/busybox").exists()
        && which("cpio");
    if !ok && std::env::var_os("CI").is_some() {
        panic!("the QEMU guest is not prepared: run .ci/deps and .ci/guest-kernel");
    }
    if !ok {
        eprintln!("skipped: QEMU guest not prepared (run .ci/deps and .ci/guest-kernel)");
    }
    ok
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Makes a new, empty scratch directory.
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "caploop-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds an initramfs whose init runs `script` after taking a lease, with
/// extra `files` (path inside the guest, contents).
pub fn build_initrd(scratch: &Scratch, script: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let kdir = kernel_dir().expect("kernel prepared");
    let root = scratch.0.join("root");
    for d in [
        "bin",
        "sbin",
        "proc",
        "sys",
        "dev",
        "etc",
        "tmp",
        "www",
        "lib/modules",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for m in MODULES {
        std::fs::copy(
            kdir.join(format!("modules/{m}.ko")),
            root.join(format!("lib/modules/{m}.ko")),
        )
        .unwrap();
    }
    let init = INIT.replace("@MODULES@", &MODULES.join(" "));
    write_exec(&root.join("init"), init.as_bytes());
    write_exec(&root.join("test.sh"), script.as_bytes());
    for (path, data) in files {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let out = scratch.0.join("initrd.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc --quiet > '{}'",
            root.display(),
            out.display()
        ))
        .status()
        .expect("cpio");
    assert!(status.success(), "cpio failed");
    out
}

fn write_exec(path: &Path, data: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A running guest and its console lines.
pub struct Guest {
    child: Child,
    lines: Receiver<String>,
    /// Everything seen so far, for failure messages.
    pub transcript: Vec<String>,
}

impl Guest {
    /// Boots the guest with `netdev` as QEMU's `-netdev` argument (id n0).
    pub fn boot(initrd: &Path, netdev: &str) -> Guest {
        Guest::boot_with(initrd, netdev, "virtio-net-pci,netdev=n0", &[])
    }

    /// [`boot`](Guest::boot) with QEMU's `-device` argument and `extra`
    /// arguments (vhost-user's shared memory backend and its chardev).
    pub fn boot_with(initrd: &Path, netdev: &str, device: &str, extra: &[&str]) -> Guest {
        let kdir = kernel_dir().expect("kernel prepared");
        let mut child = Command::new("qemu-system-x86_64")
            .args([
                "-M",
                "q35",
                "-m",
                "256",
                "-accel",
                "tcg",
                "-nographic",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(kdir.join("vmlinuz"))
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            .args(["-netdev", netdev])
            .args(["-device", device])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64");
        let (tx, rx) = channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let line = line.trim_end_matches('\r').to_string();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Guest {
            child,
            lines: rx,
            transcript: Vec::new(),
        }
    }

    /// Waits for a console line starting with `prefix` and returns it.
    pub fn wait_for(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.transcript.push(line.clone());
                    if line.starts_with(prefix) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
    }

    /// Waits for `GUEST-DONE` (or the guest's exit) and returns the whole
    /// transcript.
    pub fn finish(&mut self, timeout: Duration) -> Vec<String> {
        self.wait_for("GUEST-DONE", timeout);
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.try_recv() {
            self.transcript.push(line);
        }
        self.transcript.clone()
    }

    /// Whether QEMU is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The transcript so far, one string, for assertion messages.
    pub fn dump(&self) -> String {
        self.transcript.join("\n")
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `data` to a file in the scratch directory and returns its path.
pub fn scratch_file(scratch: &Scratch, name: &str, data: &[u8]) -> PathBuf {
    let p = scratch.0.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(data).unwrap();
    p
}

/// GETs `path` from a host forward at 127.0.0.1:`port` (HTTP/1.0) and
/// returns the body.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Vec<u8> {
    try_http_get(port, path, timeout).expect("GET through the host forward")
}

/// [`http_get`] that reports a failure (no connection, no answer, no
/// header) instead of panicking, for retrying while a link comes back.
pub fn try_http_get(port: u16, path: &str, timeout: Duration) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: guest\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let body_at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header in {} bytes", resp.len())))?
        + 4;
    Ok(resp.split_off(body_at))
}

/// A host listener on 127.0.0.1 that reports what the first connection
/// sent.
pub fn host_listener() -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    host_listener_on("127.0.0.1:0")
}

/// [`host_listener`] on `addr` (`"[::1]:0"` for IPv6).
pub fn host_listener_on(addr: &str) -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    use std::io::Read;
    let l = std::net::TcpListener::bind(addr).unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            let _ = tx.send(got);
        }
    });
    (port, rx)
}

/// Deterministic, incompressible-looking bytes (xorshift from `seed`, which
/// must not be 0).
pub fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
