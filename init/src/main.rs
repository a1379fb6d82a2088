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
//! Frame: one byte of kind (1 stdout, 2 stderr, 3 exit status), four bytes of payload length
//! (big-endian), the payload (the bytes read; for the exit status, the code as a big-endian
//! i32: the exit code, or 128 + the signal that killed the action, as Docker's init reports).
//!
//! Signals: SIGTERM and every other catchable signal but SIGCHLD go to the action's process, as
//! Docker's init does; SIGKILL ends this process and with it the container.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};

/// Frame kinds.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const EXIT: u8 = 3;

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
    let mut action = Command::new(&command[0]);
    action
        .args(&command[1..])
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
