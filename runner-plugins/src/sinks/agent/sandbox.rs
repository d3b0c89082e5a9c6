//! The kernel sandbox (Landlock) applied to every agent before it execs.
//!
//! The ruleset is built in the runner (allocations, directory walks, file
//! opens) and handed to the child as one file descriptor; between fork and
//! exec the child only makes two async-signal-safe system calls
//! (`prctl(PR_SET_NO_NEW_PRIVS)` and `landlock_restrict_self`).
//!
//! What the policy allows is documented in `docs/agents.md` ("The kernel
//! sandbox"); keep the two in step.

use runner_core::config::Environment;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, NetPort, Ruleset, RulesetAttr, RulesetCreatedAttr,
    Scope, make_bitflags, path_beneath_rules,
};

/// Landlock ABI 4 (Linux 6.7) is the first that restricts TCP connect: below
/// it an agent could send data anywhere, so the sandbox counts as missing.
pub(crate) const MIN_ABI: i32 = 4;

/// Model APIs and most API servers behind a load balancer listen on 443; a
/// kube-apiserver reached directly listens on 6443.
pub(crate) const DEFAULT_CONNECT_PORTS: [u16; 2] = [443, 6443];

/// Read (and execute) access for running ordinary CLIs.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
    "/proc",
    "/sys",
    // Where /etc/resolv.conf points on systemd hosts.
    "/run/systemd/resolve",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
];

/// Character devices a shell writes to (`2>/dev/null`).
const DEVICE_WRITE: &[&str] = &["/dev/null", "/dev/full"];

/// Host secrets under the system directories above, never readable by an
/// agent (the agent may run as root, where file modes do not protect them).
const SYSTEM_SECRETS: &[&str] = &[
    "/etc/kubernetes",
    "/etc/rancher",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/security/opasswd",
];

/// Everything the sandbox restricts on this kernel or a newer one (best
/// effort: rights the kernel does not know are left out by the crate).
const TARGET_FS_ABI: ABI = ABI::V9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every agent runs under the sandbox; agents are refused when the
    /// kernel cannot enforce it.
    Enforce,
    /// No kernel sandbox (explicit operator choice, logged at every start).
    Off,
}

impl Mode {
    pub(crate) const ALLOWED: &'static str = "\"enforce\" or \"off\"";

    pub(crate) fn parse(s: &str) -> Option<Mode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "enforce" | "on" => Some(Mode::Enforce),
            "off" => Some(Mode::Off),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Off => "off",
        }
    }
}

/// `[sink]` sandbox settings.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub mode: Mode,
    /// Extra directories or files the agent may read (absolute).
    pub read_paths: Vec<PathBuf>,
    /// Extra directories or files the agent may read and write (absolute).
    pub(crate) write_paths: Vec<PathBuf>,
    /// TCP ports the agent may connect to (any address).
    pub connect_ports: Vec<u16>,
    /// UDP sockets allowed (`sandbox_udp = "allow"`); denied by default.
    pub allow_udp: bool,
    /// Never granted through a broader directory: the runner's config
    /// directory, the workspace root (other incidents), kubeconfigs, token
    /// files. Filled by the config reader.
    pub deny_paths: Vec<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            mode: Mode::Enforce,
            read_paths: Vec::new(),
            write_paths: Vec::new(),
            connect_ports: DEFAULT_CONNECT_PORTS.to_vec(),
            allow_udp: false,
            deny_paths: Vec::new(),
        }
    }
}

/// The kernel's Landlock ABI version (0: none), probed once.
pub(crate) fn kernel_abi() -> i32 {
    static ABI_VERSION: OnceLock<i32> = OnceLock::new();
    *ABI_VERSION.get_or_init(|| {
        const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
        // SAFETY: with a null attribute pointer, size 0 and the VERSION flag
        // the call only returns the ABI number (or -1); it touches no memory.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        if v < 0 { 0 } else { v as i32 }
    })
}

/// Why the sandbox cannot be enforced on this kernel, or `None` when it can.
pub(crate) fn unsupported_reason() -> Option<String> {
    let abi = kernel_abi();
    if abi == 0 {
        Some("the kernel has no Landlock (not built in, or not in the lsm= boot list)".into())
    } else if abi < MIN_ABI {
        Some(format!(
            "the kernel's Landlock ABI is {abi}; at least {MIN_ABI} (Linux 6.7) is needed to restrict network connections"
        ))
    } else {
        None
    }
}

/// One line for `runner validate`: what agents will run under here.
pub(crate) fn describe(cfg: &SandboxConfig) -> String {
    match (cfg.mode, unsupported_reason()) {
        (Mode::Off, _) => "off (agents run without a kernel sandbox)".to_string(),
        (Mode::Enforce, None) => format!(
            "enforce (Landlock ABI {}; TCP connect to ports {:?}; UDP {}; raw and packet sockets denied)",
            kernel_abi(),
            cfg.connect_ports,
            if cfg.allow_udp {
                "ALLOWED to any host"
            } else if cfg.connect_ports.contains(&53) {
                "denied, names resolve over TCP port 53"
            } else {
                "denied; with TCP port 53 not allowed either, agents resolve only names in /etc/hosts"
            }
        ),
        (Mode::Enforce, Some(why)) => {
            format!("enforce, but UNAVAILABLE: {why}; every agent would be refused")
        }
    }
}

/// Landlock features beyond the minimum that this kernel lacks (logged as
/// warnings at startup).
pub(crate) fn missing_features() -> Vec<&'static str> {
    let abi = kernel_abi();
    let mut v = Vec::new();
    if abi < 5 {
        v.push("device ioctl restriction (ABI 5)");
    }
    if abi < 6 {
        v.push("signal and abstract-socket scoping (ABI 6): an agent can signal the runner");
    }
    if abi < 9 {
        v.push(
            "UNIX socket connect restriction (ABI 9): an agent can connect to named sockets it can reach",
        );
    }
    v
}

/// The paths and ports one agent gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub devices: Vec<PathBuf>,
    pub ports: Vec<u16>,
}

/// What varies per agent.
pub(crate) struct Inputs<'a> {
    pub workspace: &'a Path,
    /// A private HOME/state directory to grant read-write, when the agent
    /// has one (never the operator's HOME).
    pub private_home: Option<&'a Path>,
    /// `argv[0]`.
    pub program: &'a str,
    /// The agent's PATH.
    pub path_env: Option<&'a str>,
    /// The runner's HOME: never granted as a whole, nor any ancestor of it.
    pub runner_home: Option<&'a Path>,
    /// The agent's own KUBECONFIG (colon-separated): readable, as the
    /// operator chose to give it (the runner's own stays protected).
    pub agent_kubeconfig: Option<&'a str>,
}

fn canon(p: &Path) -> Option<PathBuf> {
    p.canonicalize().ok()
}

/// True for `/`, for `home` and for every ancestor of `home`.
fn too_broad(p: &Path, home: Option<&Path>) -> bool {
    p.parent().is_none() || home.is_some_and(|h| h.starts_with(p))
}

/// Grants `root` minus the `deny` subtrees: a denied path inside `root`
/// makes `root` expand into its entries, recursively, around the denial.
/// Entries that appear later under an expanded directory are not granted
/// (fail closed).
fn grant_minus(root: &Path, deny: &[PathBuf], out: &mut Vec<PathBuf>, depth: usize) {
    if deny.iter().any(|d| root.starts_with(d)) {
        return;
    }
    if !deny.iter().any(|d| d.starts_with(root)) {
        out.push(root.to_path_buf());
        return;
    }
    if depth > 16 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let child = e.path();
        let Some(real) = canon(&child) else { continue };
        if real != child {
            // A symlink: judged by where it leads (a rule follows it).
            if deny
                .iter()
                .any(|d| real.starts_with(d) || d.starts_with(&real))
            {
                continue;
            }
            out.push(child);
        } else {
            grant_minus(&child, deny, out, depth + 1);
        }
    }
}

/// The executable `program` resolves to, searched like `execvp` does.
fn resolve_program(program: &str, path_env: Option<&str>, cwd: &Path) -> Option<PathBuf> {
    if program.contains('/') {
        let p = cwd.join(program);
        return p.is_file().then_some(p);
    }
    path_env?
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

fn is_absolute_clean(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| !matches!(c, Component::ParentDir | Component::CurDir))
}

/// Checks an operator-given path list: absolute, existing, and not exposing
/// what the sandbox protects. Returns one message per bad entry.
pub(crate) fn check_paths(paths: &[String], deny: &[PathBuf]) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    for p in paths {
        let path = Path::new(p);
        if !is_absolute_clean(path) {
            errs.push((p.clone(), "an absolute path without . or ..".to_string()));
            continue;
        }
        let Some(real) = canon(path) else {
            errs.push((p.clone(), "an existing file or directory".to_string()));
            continue;
        };
        if real.parent().is_none() {
            errs.push((p.clone(), "a path other than /".to_string()));
            continue;
        }
        if let Some(d) = deny
            .iter()
            .find(|d| d.starts_with(&real) || real.starts_with(d))
        {
            errs.push((
                p.clone(),
                format!(
                    "a path that neither is nor contains nor lies inside {} (protected from agents)",
                    d.display()
                ),
            ));
        }
    }
    errs
}

/// The runner's own credential files, named by its environment: its
/// kubeconfigs (`KUBECONFIG`) and the MCP token file. Agents never read them.
pub(crate) fn runner_secret_files(env: &Environment) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = env
        .get("KUBECONFIG")
        .map(|kc| {
            kc.split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    files.extend(
        env.get(crate::settings::MCP_TOKEN_FILE.env)
            .map(PathBuf::from),
    );
    files
}

/// Paths to keep from agents whatever the grants: the configured ones (the
/// runner's own credential files among them, see [`runner_secret_files`]),
/// the credential directories of the runner's HOME, and host secrets.
pub(crate) fn protected_paths(cfg: &SandboxConfig, runner_home: Option<&Path>) -> Vec<PathBuf> {
    let mut deny: Vec<PathBuf> = cfg.deny_paths.iter().filter_map(|p| canon(p)).collect();
    if let Some(h) = runner_home {
        for d in [".kube", ".ssh", ".aws", ".config/gcloud", ".docker"] {
            deny.extend(canon(&h.join(d)));
        }
    }
    deny.extend(SYSTEM_SECRETS.iter().filter_map(|p| canon(Path::new(p))));
    deny.sort();
    deny.dedup();
    deny
}

impl Policy {
    /// The grants of one agent. Paths that do not exist are left out.
    pub(crate) fn build(cfg: &SandboxConfig, i: &Inputs<'_>) -> Policy {
        let deny = protected_paths(cfg, i.runner_home);
        let home = i.runner_home.and_then(canon);
        let home = home.as_deref();
        let mut read = Vec::new();
        for p in SYSTEM_READ {
            if let Some(r) = canon(Path::new(p)) {
                grant_minus(&r, &deny, &mut read, 0);
            }
        }
        // The agent's own program: the directory it is in and, for an npm
        // install, the whole prefix (node and the package's files) and the
        // node_modules directory it lives in.
        if let Some(exe) = resolve_program(i.program, i.path_env, i.workspace) {
            let mut dirs = Vec::new();
            for f in [Some(exe.clone()), canon(&exe)].into_iter().flatten() {
                if let Some(dir) = f.parent() {
                    dirs.push(dir.to_path_buf());
                    if let Some(prefix) = dir.parent()
                        && prefix.join("lib/node_modules").is_dir()
                        && !too_broad(prefix, home)
                    {
                        dirs.push(prefix.to_path_buf());
                    }
                }
                // An npm package may run a native binary from a sibling
                // package (codex's platform build): grant its node_modules.
                if let Some(nm) = f
                    .ancestors()
                    .find(|a| a.file_name().is_some_and(|n| n == "node_modules"))
                    && !too_broad(nm, home)
                {
                    dirs.push(nm.to_path_buf());
                }
            }
            for d in dirs.iter().filter_map(|d| canon(d)) {
                if !too_broad(&d, home) {
                    grant_minus(&d, &deny, &mut read, 0);
                }
            }
        }
        // Every PATH directory, so the tools the agent calls run.
        for d in i.path_env.unwrap_or("").split(':') {
            if !d.starts_with('/') {
                continue;
            }
            if let Some(d) = canon(Path::new(d))
                && !too_broad(&d, home)
            {
                grant_minus(&d, &deny, &mut read, 0);
            }
        }
        for p in &cfg.read_paths {
            read.extend(canon(p));
        }
        for p in i.agent_kubeconfig.unwrap_or("").split(':') {
            if p.starts_with('/') {
                read.extend(canon(Path::new(p)));
            }
        }
        let mut write: Vec<PathBuf> = [Some(i.workspace), i.private_home]
            .into_iter()
            .flatten()
            .filter_map(canon)
            .collect();
        write.extend(cfg.write_paths.iter().filter_map(|p| canon(p)));
        let devices = DEVICE_WRITE
            .iter()
            .filter_map(|p| canon(Path::new(p)))
            .collect();
        read.sort();
        read.dedup();
        write.sort();
        write.dedup();
        let mut ports = cfg.connect_ports.clone();
        ports.sort_unstable();
        ports.dedup();
        Policy {
            read,
            write,
            devices,
            ports,
        }
    }

    /// Creates the Landlock ruleset; the returned descriptor is what the
    /// child applies (see [`restrict_in_child`]).
    pub(crate) fn ruleset(&self) -> Result<OwnedFd, String> {
        let err = |e: landlock::RulesetError| format!("landlock ruleset: {e}");
        let all_fs = AccessFs::from_all(TARGET_FS_ABI);
        let read: BitFlags<AccessFs> = AccessFs::from_read(TARGET_FS_ABI);
        let device: BitFlags<AccessFs> =
            make_bitflags!(AccessFs::{ReadFile | WriteFile | Truncate});
        let created =
            Ruleset::default()
                .handle_access(all_fs)
                .map_err(err)?
                .handle_access(AccessNet::from_all(ABI::V4))
                .map_err(err)?
                .scope(Scope::from_all(ABI::V6))
                .map_err(err)?
                .create()
                .map_err(err)?
                .add_rules(path_beneath_rules(&self.read, read))
                .map_err(err)?
                .add_rules(path_beneath_rules(&self.write, all_fs))
                .map_err(err)?
                .add_rules(path_beneath_rules(&self.devices, device))
                .map_err(err)?
                .add_rules(self.ports.iter().map(|p| {
                    Ok::<_, landlock::RulesetError>(NetPort::new(*p, AccessNet::ConnectTcp))
                }))
                .map_err(err)?;
        let fd: Option<OwnedFd> = created.into();
        fd.ok_or_else(|| "landlock is not supported by this kernel".to_string())
    }
}

/// The socket filter (seccomp) that closes what Landlock leaves open:
/// Landlock restricts TCP only, so every other IP socket would reach any
/// host. Denied with EPERM: `socket()` for AF_INET/AF_INET6 of any type but
/// SOCK_STREAM, or with a protocol other than TCP (UDP, raw, SCTP,
/// MPTCP...), unless `udp` allows SOCK_DGRAM; AF_PACKET; and io_uring,
/// whose socket operations bypass the filter. AF_UNIX, AF_NETLINK (address
/// lookups) and TCP stay allowed (TCP is Landlock's).
///
/// Built in the runner; the child only installs it (see
/// [`restrict_in_child`]).
pub(crate) fn socket_filter(udp: bool) -> Result<seccompiler::BpfProgram, String> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond,
        SeccompFilter, SeccompRule, TargetArch,
    };
    let err = |e: seccompiler::BackendError| format!("seccomp filter: {e}");
    let cond = |arg: u8, op: Op, v: u64| Cond::new(arg, Len::Dword, op, v).map_err(err);
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(err)?;
    // The type argument also carries SOCK_NONBLOCK / SOCK_CLOEXEC.
    const SOCK_TYPE_MASK: u64 = 0xf;
    let mut deny_types = vec![
        libc::SOCK_RAW,
        libc::SOCK_RDM,
        libc::SOCK_SEQPACKET,
        libc::SOCK_DCCP,
        // SOCK_PACKET (obsolete packet capture; deprecated in libc).
        10,
    ];
    if !udp {
        deny_types.push(libc::SOCK_DGRAM);
    }
    let mut socket_rules = Vec::new();
    for domain in [libc::AF_INET, libc::AF_INET6] {
        for t in &deny_types {
            socket_rules.push(
                SeccompRule::new(vec![
                    cond(0, Op::Eq, domain as u64)?,
                    cond(1, Op::MaskedEq(SOCK_TYPE_MASK), *t as u64)?,
                ])
                .map_err(err)?,
            );
        }
        // A stream socket with another protocol than TCP (SCTP, MPTCP).
        socket_rules.push(
            SeccompRule::new(vec![
                cond(0, Op::Eq, domain as u64)?,
                cond(1, Op::MaskedEq(SOCK_TYPE_MASK), libc::SOCK_STREAM as u64)?,
                cond(2, Op::Ne, 0)?,
                cond(2, Op::Ne, libc::IPPROTO_TCP as u64)?,
            ])
            .map_err(err)?,
        );
    }
    socket_rules
        .push(SeccompRule::new(vec![cond(0, Op::Eq, libc::AF_PACKET as u64)?]).map_err(err)?);
    let mut rules = std::collections::BTreeMap::new();
    rules.insert(libc::SYS_socket, socket_rules);
    // An empty rule list matches every call.
    rules.insert(libc::SYS_io_uring_setup, Vec::new());
    if arch == TargetArch::x86_64 {
        // The x32 ABI numbers pass the x86_64 architecture check.
        const X32: i64 = 0x4000_0000;
        rules.insert(X32 | libc::SYS_socket, Vec::new());
        rules.insert(X32 | libc::SYS_io_uring_setup, Vec::new());
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(err)?;
    filter.try_into().map_err(err)
}

/// What the child installs before exec: the Landlock ruleset and the
/// socket filter, both built by the runner.
pub(crate) struct ChildRestrictions {
    pub ruleset: OwnedFd,
    pub filter: seccompiler::BpfProgram,
}

/// Applies the ruleset and the socket filter to the calling process. Runs
/// between fork and exec: only async-signal-safe system calls, no
/// allocation.
///
/// # Safety
/// `fd` must be a Landlock ruleset descriptor that stays open for the call;
/// `filter` must stay alive for the call.
pub(crate) unsafe fn restrict_in_child(
    fd: RawFd,
    filter: &[seccompiler::sock_filter],
) -> std::io::Result<()> {
    // Same C layout (`struct sock_filter`) in both crates.
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl and syscall take integer arguments or pointers to
    // locals that outlive the call.
    unsafe {
        drop_capabilities()?;
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Needs no_new_privs (set above) when the runner is unprivileged.
        const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
        if !filter.is_empty()
            && libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                0u32,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Leaves the agent no capability, now or after exec: a root agent would
/// otherwise keep CAP_SYS_PTRACE (read any process's environment, which
/// Landlock does not stop), CAP_DAC_OVERRIDE and the rest. Clears the
/// ambient set, empties the bounding set (what exec can grant back) and
/// the current sets. An unprivileged runner has nothing to drop: the
/// bounding-set calls then fail with EPERM, which is ignored.
///
/// # Safety
/// Between fork and exec: raw system calls only.
unsafe fn drop_capabilities() -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    // SAFETY: integer arguments; `header` and `data` are live locals of
    // the layout the kernel expects for version 3 (two data elements).
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        for cap in 0..64 {
            // EINVAL past the kernel's last capability; EPERM unprivileged.
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        let mut header = Header {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// The ruleset applied to a real child: writes only in the workspace,
    /// reads not outside the grants, TCP connect only to allowed ports.
    #[test]
    fn child_under_the_ruleset_is_confined() {
        // The product's promise needs it; a kernel without it fails here.
        assert_eq!(unsupported_reason(), None);
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let (ws, outside) = (root.join("ws"), root.join("outside"));
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s3cret").unwrap();
        let denied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cfg = SandboxConfig {
            connect_ports: vec![allowed.local_addr().unwrap().port()],
            ..SandboxConfig::default()
        };
        let policy = Policy::build(
            &cfg,
            &Inputs {
                workspace: &ws,
                private_home: None,
                program: "bash",
                path_env: Some("/usr/bin:/bin"),
                runner_home: None,
                agent_kubeconfig: None,
            },
        );
        let fd = policy.ruleset().unwrap();
        let raw = fd.as_raw_fd();
        let filter = socket_filter(false).unwrap();
        let script = format!(
            "echo ok > {ws}/in; echo bad > {out}/written; cat {out}/secret > {ws}/stolen; \
             (exec 3<>/dev/tcp/127.0.0.1/{d}) && echo denied-connected > {ws}/net; \
             (exec 3<>/dev/tcp/127.0.0.1/{a}) && echo allowed-connected >> {ws}/net; true",
            ws = ws.display(),
            out = outside.display(),
            d = denied.local_addr().unwrap().port(),
            a = allowed.local_addr().unwrap().port(),
        );
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("bash");
        cmd.args(["-c", &script]);
        // SAFETY: restrict_in_child is async-signal-safe; `fd` outlives the spawn.
        unsafe {
            cmd.pre_exec(move || restrict_in_child(raw, &filter));
        }
        let st = cmd.status().unwrap();
        drop(fd);
        assert!(st.success());
        assert_eq!(std::fs::read_to_string(ws.join("in")).unwrap(), "ok\n");
        assert!(!outside.join("written").exists());
        assert_eq!(std::fs::read_to_string(ws.join("stolen")).unwrap(), "");
        assert_eq!(
            std::fs::read_to_string(ws.join("net")).unwrap(),
            "allowed-connected\n"
        );
    }

    /// What the socket filter leaves a child: a UDP datagram to a listener
    /// the test owns arrives only when UDP is allowed (the control shows
    /// the probe would see a leak); raw, packet and non-TCP stream sockets
    /// are refused either way; UNIX sockets and TCP to an allowed port work.
    #[test]
    fn socket_filter_denies_udp_raw_and_packet_sockets() {
        assert_eq!(unsupported_reason(), None);
        let run = |allow_udp: bool| -> (String, Vec<u8>) {
            let tmp = tempfile::tempdir().unwrap();
            let ws = tmp.path().canonicalize().unwrap();
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            udp.set_nonblocking(true).unwrap();
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let cfg = SandboxConfig {
                connect_ports: vec![tcp.local_addr().unwrap().port()],
                allow_udp,
                ..SandboxConfig::default()
            };
            let policy = Policy::build(
                &cfg,
                &Inputs {
                    workspace: &ws,
                    private_home: None,
                    program: "python3",
                    path_env: Some("/usr/bin:/bin"),
                    runner_home: None,
                    agent_kubeconfig: None,
                },
            );
            let fd = policy.ruleset().unwrap();
            let raw = fd.as_raw_fd();
            let filter = socket_filter(cfg.allow_udp).unwrap();
            let script = format!(
                "import socket as s\n\
                 out = []\n\
                 def t(name, f):\n\
                 \ttry:\n\t\tf(); out.append(name + '=ok')\n\
                 \texcept OSError as e:\n\t\tout.append(name + '=errno' + str(e.errno))\n\
                 t('udp', lambda: s.socket(s.AF_INET, s.SOCK_DGRAM).sendto(b'leak', ('127.0.0.1', {u})))\n\
                 t('udp6', lambda: s.socket(s.AF_INET6, s.SOCK_DGRAM | s.SOCK_CLOEXEC))\n\
                 t('raw', lambda: s.socket(s.AF_INET, s.SOCK_RAW, s.IPPROTO_ICMP))\n\
                 t('packet', lambda: s.socket(s.AF_PACKET, s.SOCK_RAW))\n\
                 t('sctp', lambda: s.socket(s.AF_INET, s.SOCK_STREAM, 132))\n\
                 t('unix', lambda: s.socketpair(s.AF_UNIX))\n\
                 t('tcp', lambda: s.create_connection(('127.0.0.1', {t})).close())\n\
                 print(' '.join(out))\n",
                u = udp.local_addr().unwrap().port(),
                t = tcp.local_addr().unwrap().port(),
            );
            use std::os::unix::process::CommandExt;
            let mut cmd = std::process::Command::new("python3");
            cmd.args(["-c", &script]);
            // SAFETY: restrict_in_child is async-signal-safe; `fd` and the
            // filter outlive the spawn.
            unsafe {
                cmd.pre_exec(move || restrict_in_child(raw, &filter));
            }
            let out = cmd.output().unwrap();
            drop(fd);
            assert!(out.status.success(), "{out:?}");
            // Loopback delivers at send time: the child has exited, so a
            // sent datagram is already queued.
            let mut buf = [0u8; 64];
            let got = match udp.recv(&mut buf) {
                Ok(n) => buf[..n].to_vec(),
                Err(_) => Vec::new(),
            };
            (String::from_utf8_lossy(&out.stdout).trim().to_string(), got)
        };
        let (out, got) = run(false);
        assert!(
            got.is_empty(),
            "a datagram left the sandbox: {got:?} ({out})"
        );
        for probe in ["udp", "udp6", "raw", "packet", "sctp"] {
            assert!(out.contains(&format!("{probe}=errno1")), "{probe}: {out}");
        }
        assert!(out.contains("unix=ok") && out.contains("tcp=ok"), "{out}");
        // Control: with UDP allowed the same probe is seen by the listener.
        let (out, got) = run(true);
        assert_eq!(got, b"leak", "{out}");
        for probe in ["raw", "packet", "sctp"] {
            assert!(out.contains(&format!("{probe}=errno1")), "{probe}: {out}");
        }
    }

    #[test]
    fn grant_minus_expands_around_denials() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        for d in ["a/secret", "a/ok", "b"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("a/file"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("a/secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("b"), root.join("link2")).unwrap();
        let deny = vec![root.join("a/secret")];
        let mut out = Vec::new();
        grant_minus(&root, &deny, &mut out, 0);
        out.sort();
        assert_eq!(
            out,
            vec![
                root.join("a/file"),
                root.join("a/ok"),
                root.join("b"),
                root.join("link2")
            ]
        );
        // Inside a denial: nothing.
        let mut out = Vec::new();
        grant_minus(&root.join("a/secret"), &deny, &mut out, 0);
        assert!(out.is_empty());
    }

    #[test]
    fn operator_paths_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("cfg/inner")).unwrap();
        std::fs::create_dir_all(root.join("tools")).unwrap();
        let deny = vec![root.join("cfg")];
        let s = |p: PathBuf| p.display().to_string();
        let errs = check_paths(
            &[
                "relative/x".into(),
                "/nope/does/not/exist".into(),
                "/".into(),
                s(root.clone()),
                s(root.join("cfg/inner")),
                s(root.join("tools")),
                format!("{}/../x", root.display()),
            ],
            &deny,
        );
        let bad: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(bad.len(), 6, "{errs:?}");
        assert!(!bad.contains(&s(root.join("tools")).as_str()));
    }

    #[test]
    fn policy_never_grants_home_or_denied_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let home = root.join("home");
        let ws = root.join("incidents/inc-1");
        std::fs::create_dir_all(home.join("bin")).unwrap();
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::write(home.join("bin/tool"), "#!/bin/sh\n").unwrap();
        let cfg = SandboxConfig {
            deny_paths: vec![root.join("incidents")],
            ..SandboxConfig::default()
        };
        let path_env = format!(
            "{}:{}:/usr/bin:relative",
            home.display(),
            home.join("bin").display()
        );
        let p = Policy::build(
            &cfg,
            &Inputs {
                workspace: &ws,
                private_home: None,
                program: "tool",
                path_env: Some(&path_env),
                runner_home: Some(&home),
                agent_kubeconfig: None,
            },
        );
        assert!(p.read.contains(&home.join("bin")), "{p:?}");
        assert!(!p.read.contains(&home), "{p:?}");
        assert!(!p.read.iter().any(|r| r.parent().is_none()), "{p:?}");
        assert!(!p.read.iter().any(|r| r.starts_with(root.join("incidents"))));
        assert_eq!(p.write, vec![ws.clone()]);
        assert_eq!(p.ports, vec![443, 6443]);
        if Path::new("/etc/ssh").exists() {
            assert!(!p.read.iter().any(|r| r.starts_with("/etc/ssh")), "{p:?}");
            assert!(p.read.iter().any(|r| r.starts_with("/etc")), "{p:?}");
        }
    }
}
