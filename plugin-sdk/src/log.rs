//! Logging macros: `trace!`, `debug!`, `info!`, `warn!`, `error!`.
//!
//! Each formats its arguments like `format!` and writes one line to the host log, tagged by
//! the host with the stage name and version. The host truncates very long lines.
//!
//! ```no_run
//! let dropped = 3;
//! weir_sdk::info!("dropped {dropped} turns");
//! ```

/// Writes a line at `trace` level to the host log.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => { $crate::__log($crate::LogLevel::Trace, &::std::format!($($arg)*)) };
}

/// Writes a line at `debug` level to the host log.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::__log($crate::LogLevel::Debug, &::std::format!($($arg)*)) };
}

/// Writes a line at `info` level to the host log.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::__log($crate::LogLevel::Info, &::std::format!($($arg)*)) };
}

/// Writes a line at `warn` level to the host log.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::__log($crate::LogLevel::Warn, &::std::format!($($arg)*)) };
}

/// Writes a line at `error` level to the host log.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::__log($crate::LogLevel::Error, &::std::format!($($arg)*)) };
}

/// Macro support: writes one line to the host log.
#[doc(hidden)]
pub fn log(level: crate::LogLevel, message: &str) {
    crate::bindings::weir::stage0_1_0::host::log(level, message);
}
