//! packbox-init: PID 1 of an action's container.
//!
//! It runs the action (`packbox-init -- COMMAND [ARG]...`) with its stdout and stderr on pipes
//! of its own, relays what arrives on them as frames on the container's stdout, reaps every
//! process, forwards signals to the action, and when the action's process has exited writes its
//! exit status in a last frame and exits with that status.
//!
//! packbox reads the status frame as the end of the run, so it does not wait for the engine to
//! notice the container's exit. The action cannot forge that frame: everything it writes reaches
//! the container's streams only as the payload of a data frame, it never holds the container's
//! stdout (its own stdout and stderr are the pipes), and this process makes itself non-dumpable,
//! so the action (same user, no capabilities) cannot open `/proc/1/fd/1` either. The engine's
//! exit status of the container is still checked against the frame afterwards.
//!
//! Frame: one byte of kind (1 stdout, 2 stderr, 3 exit status, 4 to 6 artifacts), four bytes of payload length
//! (big-endian), the payload (the bytes read; for the exit status, the code as a big-endian
//! i32: the exit code, or 128 + the signal that killed the action, as Docker's init reports).
//!
//! Signals: SIGTERM and every other catchable signal but SIGCHLD go to the action's process, as
//! Docker's init does; SIGKILL ends this process and with it the container.
//!
//! Artifacts: when `ATTUNE_ARTIFACTS_DIR` is set, this process makes that folder (mode 0700)
//! before the action starts, and once the action has exited it kills whatever the action left
//! running (so nothing changes the folder while it is read), then sends the folder's regular
//! files, before the exit status frame: a frame of kind 4 (the file's size as a big-endian u64,
//! then its name's bytes), its bytes in frames of kind 5, and a frame of kind 6 (the name's
//! bytes, a 0 byte, the reason) for each entry it does not send: not a regular file (symlinks
//! are never followed, FIFOs never opened for reading), beyond the count or size bound given in
//! `PACKBOX_ARTIFACTS_LIMIT` (`FILES:BYTES`, read by this process alone), or cut short. packbox
//! checks every name and bound again: what the folder holds is the action's.

use std::ffi::{CStr, CString, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};

/// Frame kinds.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const EXIT: u8 = 3;
const ARTIFACT: u8 = 4;
const ARTIFACT_DATA: u8 = 5;
const ARTIFACT_REFUSED: u8 = 6;

/// The folder the action writes its artifacts in (set by packbox in the container's environment).
const ARTIFACTS_DIR_VAR: &str = "ATTUNE_ARTIFACTS_DIR";
/// The bounds on the artifacts (`FILES:BYTES`), for this process alone.
const ARTIFACTS_LIMIT_VAR: &str = "PACKBOX_ARTIFACTS_LIMIT";
/// Entries of the folder looked at, at most; the rest are counted in one refusal.
const MAX_ENTRIES: usize = 4096;
/// Refusals named one by one, at most; the rest are counted in one refusal.
const MAX_REFUSALS: usize = 64;

/// Bytes read from a pipe at once (one frame at most this long).
const CHUNK: usize = 32 * 1024;

/// Signals forwarded to the action (all catchable ones but SIGCHLD and the synchronous ones,
/// which concern this process itself).
const FORWARDED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGWINCH,
    libc::SIGURG,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGIO,
    libc::SIGPWR,
];

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = match args.split_first() {
        Some((separator, command)) if separator == "--" && !command.is_empty() => command,
        _ => {
            eprintln!("usage: packbox-init -- COMMAND [ARG]...");
            std::process::exit(2);
        }
    };
    // Non-dumpable: /proc/1/fd, /proc/1/mem and ptrace become out of reach of the action, which
    // runs as the same user. Before anything else, so no fd of ours is ever reachable.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let signals = match SignalFd::new() {
        Ok(signals) => signals,
        Err(e) => fail(command, "cannot watch signals", &e, 126),
    };
    let mut sink = Sink::stdout();
    let artifacts = Artifacts::from_env();
    if let Some(artifacts) = &artifacts {
        artifacts.make_folder();
    }
    let mut action = Command::new(&command[0]);
    action
        .args(&command[1..])
        .env_remove(ARTIFACTS_LIMIT_VAR)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The action starts with no signal blocked and SIGPIPE at its default, as under Docker's
    // init: a blocked mask and ignored signals survive exec.
    // SAFETY: only async-signal-safe calls (sigemptyset, sigprocmask, signal) between fork and
    // exec.
    unsafe {
        action.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            Ok(())
        })
    };
    let child = action.spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            let code = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            fail(command, "cannot run", &e, code)
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.take().map(Pipe::Out);
    let mut stderr = child.stderr.take().map(Pipe::Err);
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let mut fds = vec![libc::pollfd {
            fd: signals.fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        for pipe in [&stdout, &stderr].into_iter().flatten() {
            fds.push(libc::pollfd {
                fd: pipe.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            continue; // EINTR
        }
        for pollfd in &fds[1..] {
            if pollfd.revents == 0 {
                continue;
            }
            let slot = if stdout.as_ref().is_some_and(|p| p.fd() == pollfd.fd) {
                &mut stdout
            } else {
                &mut stderr
            };
            relay_once(slot, &mut buffer, &mut sink);
        }
        if fds[0].revents == 0 {
            continue;
        }
        match signals.next() {
            Some(libc::SIGCHLD) => {
                if let Some(code) = reap(pid) {
                    // What is in the pipes now is all the action wrote before it exited;
                    // whatever it left running ends with this process, as under Docker's init.
                    for slot in [&mut stdout, &mut stderr] {
                        drain(slot, &mut buffer, &mut sink);
                    }
                    if let Some(artifacts) = &artifacts {
                        end_leftovers();
                        artifacts.send(&mut buffer, &mut sink);
                    }
                    sink.frame(EXIT, &code.to_be_bytes());
                    std::process::exit(code);
                }
            }
            Some(signal) => {
                // SAFETY: kill(2) of our own child.
                unsafe { libc::kill(pid, signal) };
            }
            None => {}
        }
    }
}

/// Reports that the action could not be started, as the action's own stderr and status would.
fn fail(command: &[OsString], what: &str, error: &io::Error, code: i32) -> ! {
    let mut sink = Sink::stdout();
    let message = format!(
        "packbox-init: {what} {}: {error}\n",
        command[0].to_string_lossy()
    );
    sink.frame(STDERR, message.as_bytes());
    sink.frame(EXIT, &code.to_be_bytes());
    std::process::exit(code);
}

/// Reaps every exited process; returns the action's exit status once it is among them.
fn reap(action: libc::pid_t) -> Option<i32> {
    let mut found = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) with a valid pointer to an int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if libc::WIFSTOPPED(status) {
            // Only a child that made this process its tracer (PTRACE_TRACEME, where the
            // syscall profile allows it) is reported stopped: it has not exited. Let it go on
            // untraced, with the signal that stopped it.
            // SAFETY: ptrace(2) of a tracee of this process.
            unsafe {
                libc::ptrace(
                    libc::PTRACE_DETACH,
                    pid,
                    std::ptr::null_mut::<libc::c_void>(),
                    libc::WSTOPSIG(status) as libc::c_long as *mut libc::c_void,
                )
            };
            continue;
        }
        if pid == action {
            found = Some(if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                libc::WEXITSTATUS(status)
            });
        }
    }
}

/// Ends every process the action left behind and reaps them, so none of them changes the
/// artifacts folder while it is read. SIGKILL goes to every process again after each one is
/// reaped, so one forked while the last signal went round is caught by the next (a process
/// with SIGKILL pending cannot fork). Only as PID 1: elsewhere `kill(-1)` would reach beyond
/// the container.
fn end_leftovers() {
    // SAFETY: getpid, kill and waitpid with valid arguments.
    unsafe {
        if libc::getpid() != 1 {
            return;
        }
        let mut status = 0;
        loop {
            libc::kill(-1, libc::SIGKILL);
            if libc::waitpid(-1, &mut status, 0) < 0
                && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
            {
                return;
            }
        }
    }
}

/// The artifacts folder and its bounds.
struct Artifacts {
    dir: CString,
    max_files: u64,
    max_bytes: u64,
}

impl Artifacts {
    /// The folder and bounds packbox set; `None` when it set no folder. Bounds that do not
    /// parse are zero: nothing is sent.
    fn from_env() -> Option<Artifacts> {
        let dir = std::env::var_os(ARTIFACTS_DIR_VAR)?;
        let dir = CString::new(dir.into_vec()).ok()?;
        let limit = std::env::var(ARTIFACTS_LIMIT_VAR).unwrap_or_default();
        let (files, bytes) = limit.split_once(':').unwrap_or(("0", "0"));
        Some(Artifacts {
            dir,
            max_files: files.parse().unwrap_or(0),
            max_bytes: bytes.parse().unwrap_or(0),
        })
    }

    /// Makes the folder, private to the action's user (its parent is the run's own tmpfs).
    fn make_folder(&self) {
        // SAFETY: mkdir(2) of a NUL-terminated path.
        unsafe { libc::mkdir(self.dir.as_ptr(), 0o700) };
    }

    /// Sends the folder's regular files within the bounds, and a refusal for every other entry.
    fn send(&self, buffer: &mut [u8], sink: &mut Sink) {
        let mut refusals = Refusals::default();
        // SAFETY: open(2) of a NUL-terminated path; the fd is owned by `Folder` from here.
        let fd = unsafe {
            libc::open(
                self.dir.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::NotFound {
                refusals.add(
                    sink,
                    b"",
                    &format!(
                        "the artifacts folder cannot be read (a symlink, or not a folder): {error}"
                    ),
                );
            }
            return;
        }
        let Some(folder) = Folder::open(fd) else {
            return;
        };
        let (mut names, unlisted) = folder.names();
        names.sort();
        let (mut files, mut bytes) = (0u64, 0u64);
        for name in &names {
            if !usable_name(name.to_bytes()) {
                refusals.add(
                    sink,
                    name.to_bytes(),
                    "its name is not UTF-8 or holds a control character",
                );
                continue;
            }
            let Some(stat) = folder.stat(name) else {
                refusals.add(sink, name.as_bytes(), "gone before it was read");
                continue;
            };
            let kind = stat.st_mode & libc::S_IFMT;
            if kind != libc::S_IFREG {
                refusals.add(
                    sink,
                    name.as_bytes(),
                    &format!("not a regular file ({})", kind_name(kind)),
                );
                continue;
            }
            let size = stat.st_size.max(0) as u64;
            if files >= self.max_files {
                refusals.add(
                    sink,
                    name.as_bytes(),
                    &format!("beyond the {} files kept", self.max_files),
                );
                continue;
            }
            if size > self.max_bytes - bytes {
                refusals.add(
                    sink,
                    name.as_bytes(),
                    &format!(
                        "{size} bytes, beyond the {} bytes kept in all",
                        self.max_bytes
                    ),
                );
                continue;
            }
            match folder.send_file(name, size, buffer, sink) {
                Ok(()) => {
                    files += 1;
                    bytes += size;
                }
                Err(why) => refusals.add(sink, name.as_bytes(), why),
            }
        }
        if unlisted > 0 {
            refusals.add(
                sink,
                b"",
                &format!(
                    "{unlisted} more entries not looked at (more than {MAX_ENTRIES} in the folder)"
                ),
            );
        }
        refusals.finish(sink);
    }
}

/// Whether packbox could keep a file of this name (it checks again, and more).
fn usable_name(name: &[u8]) -> bool {
    std::str::from_utf8(name).is_ok_and(|text| !text.chars().any(char::is_control))
}

/// A file type's name, for a refusal.
fn kind_name(kind: libc::mode_t) -> &'static str {
    match kind {
        libc::S_IFLNK => "a symlink",
        libc::S_IFDIR => "a folder",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR | libc::S_IFBLK => "a device",
        libc::S_IFSOCK => "a socket",
        _ => "an unknown kind",
    }
}

/// Refusal frames, at most [`MAX_REFUSALS`] named; the rest counted in the last.
#[derive(Default)]
struct Refusals {
    sent: usize,
    more: usize,
}

impl Refusals {
    fn add(&mut self, sink: &mut Sink, name: &[u8], reason: &str) {
        if self.sent >= MAX_REFUSALS {
            self.more += 1;
            return;
        }
        self.sent += 1;
        let mut payload = Vec::with_capacity(name.len() + 1 + reason.len());
        payload.extend_from_slice(name);
        payload.push(0);
        payload.extend_from_slice(reason.as_bytes());
        sink.frame(ARTIFACT_REFUSED, &payload);
    }

    fn finish(self, sink: &mut Sink) {
        if self.more > 0 {
            let reason = format!("{} more entries refused", self.more);
            let mut payload = vec![0];
            payload.extend_from_slice(reason.as_bytes());
            sink.frame(ARTIFACT_REFUSED, &payload);
        }
    }
}

/// An open folder, read through its fd (never through its path again).
struct Folder {
    dir: *mut libc::DIR,
}

impl Folder {
    fn open(fd: RawFd) -> Option<Folder> {
        // SAFETY: fdopendir(3) of a folder fd this process opened; it owns the fd from here.
        let dir = unsafe { libc::fdopendir(fd) };
        if dir.is_null() {
            // SAFETY: closing the fd fdopendir did not take.
            unsafe { libc::close(fd) };
            return None;
        }
        Some(Folder { dir })
    }

    fn fd(&self) -> RawFd {
        // SAFETY: dirfd(3) of an open DIR.
        unsafe { libc::dirfd(self.dir) }
    }

    /// The entries' names (without `.` and `..`), at most [`MAX_ENTRIES`], and how many more
    /// there are.
    fn names(&self) -> (Vec<CString>, usize) {
        let (mut names, mut more) = (Vec::new(), 0);
        loop {
            // SAFETY: readdir(3) of an open DIR; the entry is read before the next call.
            let entry = unsafe { libc::readdir(self.dir) };
            if entry.is_null() {
                return (names, more);
            }
            // SAFETY: d_name is NUL-terminated within the entry.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            if names.len() < MAX_ENTRIES {
                names.push(name.to_owned());
            } else {
                more += 1;
            }
        }
    }

    /// The entry's own status (a symlink's, not its target's).
    fn stat(&self, name: &CStr) -> Option<libc::stat> {
        // SAFETY: fstatat(2) into a zeroed stat of the right size, relative to the folder's fd.
        unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            (libc::fstatat(
                self.fd(),
                name.as_ptr(),
                &mut stat,
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0)
                .then_some(stat)
        }
    }

    /// Sends one regular file of `size` bytes: its header, then its bytes. The file is opened
    /// without following a symlink and without blocking (a FIFO put in its place between the
    /// look and the open is never waited on) and must still be a regular file of that size.
    fn send_file(
        &self,
        name: &CStr,
        size: u64,
        buffer: &mut [u8],
        sink: &mut Sink,
    ) -> Result<(), &'static str> {
        // SAFETY: openat(2) relative to the folder's fd; the fd is owned by `file` from here.
        let fd = unsafe {
            libc::openat(
                self.fd(),
                name.as_ptr(),
                libc::O_RDONLY
                    | libc::O_NOFOLLOW
                    | libc::O_NONBLOCK
                    | libc::O_NOCTTY
                    | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err("cannot be opened for reading");
        }
        // SAFETY: an fd this process just opened and owns alone.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        match file.metadata() {
            Ok(meta) if meta.is_file() && meta.len() == size => {}
            _ => return Err("changed before it was read"),
        }
        let mut header = size.to_be_bytes().to_vec();
        header.extend_from_slice(name.to_bytes());
        sink.frame(ARTIFACT, &header);
        let mut left = size;
        while left > 0 {
            let want = buffer.len().min(left as usize);
            match file.read(&mut buffer[..want]) {
                Ok(0) => return Err("shorter than its size when read"),
                Ok(n) => {
                    sink.frame(ARTIFACT_DATA, &buffer[..n]);
                    left -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err("could not be read to its end"),
            }
        }
        Ok(())
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        // SAFETY: closedir(3) of the DIR this value owns, once.
        unsafe { libc::closedir(self.dir) };
    }
}

/// One of the action's output pipes.
enum Pipe {
    Out(ChildStdout),
    Err(ChildStderr),
}

impl Pipe {
    fn fd(&self) -> RawFd {
        match self {
            Pipe::Out(pipe) => pipe.as_raw_fd(),
            Pipe::Err(pipe) => pipe.as_raw_fd(),
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Pipe::Out(_) => STDOUT,
            Pipe::Err(_) => STDERR,
        }
    }

    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Pipe::Out(pipe) => pipe.read(buffer),
            Pipe::Err(pipe) => pipe.read(buffer),
        }
    }
}

/// Reads what one pipe has now and relays it; closes the pipe at its end. Returns whether
/// anything was read.
fn relay_once(slot: &mut Option<Pipe>, buffer: &mut [u8], sink: &mut Sink) -> bool {
    let Some(pipe) = slot else {
        return false;
    };
    match pipe.read(buffer) {
        Ok(0) => {
            *slot = None;
            false
        }
        Ok(n) => {
            sink.frame(pipe.kind(), &buffer[..n]);
            true
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(_) => {
            *slot = None;
            false
        }
    }
}

/// Relays everything a pipe holds now, without waiting for more.
fn drain(slot: &mut Option<Pipe>, buffer: &mut [u8], sink: &mut Sink) {
    if let Some(pipe) = slot {
        let fd = pipe.fd();
        // SAFETY: fcntl(2) on a pipe this process owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    while relay_once(slot, buffer, sink) {}
}

/// The container's stdout, written frame by frame; once nobody reads it, frames are dropped
/// (the pipes are still drained, so the action never blocks on them).
struct Sink {
    out: Option<std::mem::ManuallyDrop<std::fs::File>>,
    frame: Vec<u8>,
}

impl Sink {
    fn stdout() -> Sink {
        // SAFETY: fd 1 is this process's stdout for its whole life; ManuallyDrop never closes it.
        let out = unsafe { std::fs::File::from_raw_fd(1) };
        Sink {
            out: Some(std::mem::ManuallyDrop::new(out)),
            frame: Vec::with_capacity(CHUNK + 5),
        }
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        self.frame.clear();
        self.frame.push(kind);
        self.frame
            .extend_from_slice(&(payload.len() as u32).to_be_bytes());
        self.frame.extend_from_slice(payload);
        if out.write_all(&self.frame).is_err() {
            self.out = None;
        }
    }
}

/// The signals this process handles, blocked and read from a signalfd.
struct SignalFd {
    fd: RawFd,
}

impl SignalFd {
    fn new() -> io::Result<SignalFd> {
        // SAFETY: sigset operations on a zeroed, then emptied, set; signalfd(2) of that set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            for signal in FORWARDED {
                libc::sigaddset(&mut set, *signal);
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalFd { fd })
        }
    }

    /// The next signal that arrived (there is one when the fd is readable).
    fn next(&self) -> Option<libc::c_int> {
        // SAFETY: reading one whole signalfd_siginfo structure into one of the right size.
        unsafe {
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let read = libc::read(
                self.fd,
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            );
            (read == size as isize).then_some(info.ssi_signo as libc::c_int)
        }
    }
}
