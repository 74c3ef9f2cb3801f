//! Driving kbuild: reading what it recorded and re-running single compiles with extra flags.

pub mod cmdfile;
pub mod compile;
pub mod includes;
pub mod links;
pub mod objcache;
pub mod prepared;
pub mod toolchain;

/// `make ARGS`, which klpx runs in kernel trees. make gets SIGTERM when klpx dies (killed, or
/// ended by a signal after restoring the source), and passes it to the compilers it runs: no make
/// goes on writing into a tree after klpx has gone.
pub(crate) fn make<I, S>(args: I) -> duct::Expression
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString>,
{
    duct::cmd("make", args).before_spawn(|cmd| {
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(cmd, || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGTERM as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        Ok(())
    })
}
