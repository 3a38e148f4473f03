//! The message of a caught panic (a leaf: the guard, the restart hooks and the extensions use it).

/// The text a panic was raised with, or a placeholder when its payload is not a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn string_payloads_are_read_and_others_named() {
        let caught = |f: fn()| {
            std::panic::catch_unwind(f)
                .err()
                .map(|p| panic_message(&*p))
        };
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let literal = caught(|| panic!("static text"));
        let formatted = caught(|| panic!("formatted {}", 42));
        let other = caught(|| std::panic::panic_any(7_u8));
        std::panic::set_hook(hook);
        assert_eq!(literal.as_deref(), Some("static text"));
        assert_eq!(formatted.as_deref(), Some("formatted 42"));
        assert_eq!(other.as_deref(), Some("non-string panic payload"));
    }
}
