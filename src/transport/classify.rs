//! What went wrong in an attempt that got no answer: `dns`, `tls`, `timeout` or `connect`
//! (docs/behaviour.md §5), with a one-line explanation that says which side failed.

use std::error::Error as StdError;

use super::resolve::DnsError;
use crate::domain::Outcome;

/// Maps a client error to `dns`, `tls`, `timeout` or `connect`, with a one-line explanation.
/// `connecting`: the error came from the connect step (TCP, then the TLS handshake).
pub(super) fn classify(e: &(dyn StdError + 'static), connecting: bool) -> (Outcome, String) {
    let chain = || error_chain(e);
    if let Some(tls) = chain().find_map(tls_failure) {
        // A connect error is one of the handshake; anything later came after our side of the
        // handshake was done — with TLS 1.3, after we sent our client certificate.
        let phase = if connecting {
            Phase::Handshake
        } else {
            Phase::AfterHandshake
        };
        return (Outcome::Tls, tls_detail(&tls, phase));
    }
    let timed_out = |err: &(dyn StdError + 'static)| {
        err.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || err.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout)
    };
    let outcome = if chain().any(|err| err.downcast_ref::<DnsError>().is_some()) {
        Outcome::Dns
    } else if chain().any(timed_out) {
        Outcome::Timeout
    } else {
        Outcome::Connect
    };
    let mut parts: Vec<String> = Vec::new();
    for err in chain().skip(1) {
        let text = err.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    (outcome, parts.join(": "))
}

/// An error and its sources, outermost first.
fn error_chain<'a>(e: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |&err| err.source())
}

/// Whether `e` says that TLS failed (an alert, a certificate, a handshake cut short).
pub(super) fn is_tls_failure(e: &std::io::Error) -> bool {
    tls_failure(e).is_some()
}

/// What went wrong in TLS, as found in an error chain.
#[derive(Debug, Clone, PartialEq)]
enum TlsFailure {
    /// rustls said so: our verdict on the receiver's certificate, or an alert it sent us.
    Rustls(rustls::Error),
    /// The receiver closed the connection in the middle of the handshake.
    ClosedInHandshake,
}

/// Where the connection was when TLS failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// During the handshake (the client's connect step).
    Handshake,
    /// After our side of the handshake completed: the first read of the answer failed.
    AfterHandshake,
}

/// The TLS failure in one link of an error chain. tokio-rustls wraps a [`rustls::Error`] in an
/// [`std::io::Error`] (and hyper-rustls wraps that in another), whose `source()` skips the
/// wrapped error: the chain alone never shows it, so each `io::Error` is opened with `get_ref`.
fn tls_failure(err: &(dyn StdError + 'static)) -> Option<TlsFailure> {
    let mut cur = err;
    loop {
        if let Some(e) = cur.downcast_ref::<rustls::Error>() {
            return Some(TlsFailure::Rustls(e.clone()));
        }
        let io = cur.downcast_ref::<std::io::Error>()?;
        if let Some(alert) = flattened_alert(io) {
            return Some(TlsFailure::Rustls(rustls::Error::AlertReceived(alert)));
        }
        // tokio-rustls' own error for an EOF before the handshake completed.
        if io.kind() == std::io::ErrorKind::UnexpectedEof && io.to_string() == "tls handshake eof" {
            return Some(TlsFailure::ClosedInHandshake);
        }
        cur = io.get_ref()?;
    }
}

/// The text rustls gives [`rustls::Error::AlertReceived`].
const ALERT_TEXT: &str = "received fatal alert: ";

/// HTTP/2 keeps an I/O error only as its kind and text (h2 clones its errors), so an alert that
/// ends an h2 connection — a receiver rejecting our client certificate after a TLS 1.3
/// handshake, typically — arrives as rustls' text alone. This reads the alert back from it.
fn flattened_alert(io: &std::io::Error) -> Option<rustls::AlertDescription> {
    if io.kind() != std::io::ErrorKind::InvalidData || io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) {
        return None;
    }
    let text = io.to_string();
    let name = text.strip_prefix(ALERT_TEXT)?;
    (0..=u8::MAX)
        .map(rustls::AlertDescription::from)
        .find(|alert| format!("{alert:?}") == name)
}

/// The log line's explanation of a TLS failure. It says which side failed, as the provider's
/// troubleshooting table does (docs/providers.md): the receiver's certificate is invalid ("HTTPS
/// certificate configuration error"), or the receiver did not accept ours ("HTTPS mutual
/// authentication configuration error").
fn tls_detail(failure: &TlsFailure, phase: Phase) -> String {
    use rustls::AlertDescription as A;
    const OURS: &str = "TLS: the receiver rejected our client certificate (mutual TLS)";
    let e = match failure {
        TlsFailure::ClosedInHandshake => {
            return "TLS: the receiver closed the connection during the handshake \
                    (if it requires mutual TLS, check client_cert and client_key)"
                .into();
        }
        TlsFailure::Rustls(e) => e,
    };
    match e {
        rustls::Error::InvalidCertificate(cert) => {
            format!(
                "TLS: the receiver's certificate was rejected: {}",
                certificate_reason(cert)
            )
        }
        rustls::Error::NoCertificatesPresented => "TLS: the receiver's certificate was rejected: it sent none".into(),
        rustls::Error::AlertReceived(A::CertificateRequired) => {
            format!("{OURS}: CertificateRequired: it requires one (set client_cert and client_key)")
        }
        rustls::Error::AlertReceived(
            alert @ (A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied),
        ) => format!("{OURS}: {alert:?} (check that client_cert is signed by a CA the receiver trusts)"),
        // With TLS 1.3 the server checks our certificate after we consider the handshake done:
        // an alert that comes then is its verdict on our certificate.
        rustls::Error::AlertReceived(alert) if phase == Phase::AfterHandshake => format!("{OURS}: {alert:?}"),
        rustls::Error::AlertReceived(A::HandshakeFailure) => "TLS: the receiver refused the handshake \
             (HandshakeFailure): no TLS version or cipher suite in common, or it requires a client \
             certificate (mutual TLS: set client_cert and client_key)"
            .into(),
        rustls::Error::AlertReceived(alert) => format!("TLS: the receiver ended the handshake: {alert:?}"),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("TLS: handshake failed: {e} (is the receiver serving HTTPS on this port?)")
        }
        other => format!("TLS: handshake failed: {other}"),
    }
}

/// Why we did not accept the receiver's certificate, with what to do about it.
fn certificate_reason(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer => "it is not signed by a trusted CA (for a self-signed or private-CA receiver, \
             set ca_file to the CA that signed it)"
            .into(),
        C::BadSignature => "its signature does not verify (is ca_file the CA that signed it?)".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            format!("{e} (the URL's host must be one of the certificate's names)")
        }
        C::Expired | C::ExpiredContext { .. } => format!("it has expired: {e}"),
        C::NotValidYet | C::NotValidYetContext { .. } => format!("it is not valid yet: {e}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustls::AlertDescription as A;

    const THEIRS: &str = "TLS: the receiver's certificate was rejected";
    const OURS: &str = "TLS: the receiver rejected our client certificate (mutual TLS)";

    fn detail(e: rustls::Error, phase: Phase) -> String {
        tls_detail(&TlsFailure::Rustls(e), phase)
    }

    #[test]
    fn a_certificate_we_reject_is_the_receivers_side() {
        let d = detail(rustls::CertificateError::UnknownIssuer.into(), Phase::Handshake);
        assert!(d.starts_with(THEIRS) && d.contains("set ca_file"), "{d}");
        for e in [
            rustls::CertificateError::Expired,
            rustls::CertificateError::NotValidForName,
            rustls::CertificateError::BadSignature,
            rustls::CertificateError::BadEncoding,
        ] {
            let d = detail(e.into(), Phase::Handshake);
            assert!(d.starts_with(THEIRS), "{d}");
        }
        let d = detail(rustls::Error::NoCertificatesPresented, Phase::Handshake);
        assert!(d.starts_with(THEIRS), "{d}");
    }

    #[test]
    fn an_alert_about_a_certificate_is_our_side() {
        let d = detail(
            rustls::Error::AlertReceived(A::CertificateRequired),
            Phase::AfterHandshake,
        );
        assert!(
            d.starts_with(OURS) && d.contains("CertificateRequired") && d.contains("set client_cert"),
            "{d}"
        );
        for alert in [A::BadCertificate, A::UnknownCA, A::CertificateExpired, A::AccessDenied] {
            for phase in [Phase::Handshake, Phase::AfterHandshake] {
                let d = detail(rustls::Error::AlertReceived(alert), phase);
                assert!(d.starts_with(OURS) && d.contains(&format!("{alert:?}")), "{d}");
            }
        }
    }

    #[test]
    fn other_alerts_are_ours_only_after_the_handshake() {
        // TLS 1.3: the server judges our certificate after our side of the handshake is done.
        let d = detail(rustls::Error::AlertReceived(A::DecryptError), Phase::AfterHandshake);
        assert!(d.starts_with(OURS), "{d}");
        let d = detail(rustls::Error::AlertReceived(A::ProtocolVersion), Phase::Handshake);
        assert!(
            d.contains("ended the handshake: ProtocolVersion") && !d.contains(OURS),
            "{d}"
        );
        let d = detail(rustls::Error::AlertReceived(A::HandshakeFailure), Phase::Handshake);
        assert!(d.contains("HandshakeFailure") && d.contains("client_cert"), "{d}");
        let d = tls_detail(&TlsFailure::ClosedInHandshake, Phase::Handshake);
        assert!(d.contains("closed the connection during the handshake"), "{d}");
    }

    #[test]
    fn rustls_errors_are_found_inside_io_errors() {
        use std::io::{Error, ErrorKind};
        let alert = rustls::Error::AlertReceived(A::UnknownCA);
        // tokio-rustls' wrapping, and hyper-rustls' around it.
        let once = Error::new(ErrorKind::InvalidData, alert.clone());
        assert_eq!(tls_failure(&once), Some(TlsFailure::Rustls(alert.clone())));
        let twice = Error::other(Error::new(ErrorKind::InvalidData, alert.clone()));
        assert_eq!(tls_failure(&twice), Some(TlsFailure::Rustls(alert.clone())));
        // h2 keeps only kind and text.
        let flat = Error::new(ErrorKind::InvalidData, once.to_string());
        assert_eq!(tls_failure(&flat), Some(TlsFailure::Rustls(alert)));
        let flat = Error::new(ErrorKind::InvalidData, format!("{ALERT_TEXT}{:?}", A::Unknown(200)));
        assert_eq!(
            tls_failure(&flat),
            Some(TlsFailure::Rustls(rustls::Error::AlertReceived(A::Unknown(200))))
        );
        let eof = Error::new(ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(tls_failure(&eof), Some(TlsFailure::ClosedInHandshake));
        for other in [
            Error::from(ErrorKind::ConnectionReset),
            Error::new(ErrorKind::InvalidData, "received fatal alert: NoSuchAlert"),
            Error::new(ErrorKind::UnexpectedEof, "eof"),
        ] {
            assert_eq!(tls_failure(&other), None, "{other}");
        }
        assert_eq!(
            tls_failure(&DnsError {
                host: "h".into(),
                reason: "r".into()
            }),
            None
        );
    }
}
