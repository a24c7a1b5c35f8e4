//! The resource loader on any text: YAML documents of any kind, shape and
//! size give resources or a `LoadError` that names the file and a line in
//! it — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = tandem_config::LoadContext {
        app_id: "fuzz".into(),
        namespace: None,
    };
    let mut set = tandem_config::ResourceSet::default();
    let file = std::path::Path::new("fuzz.yaml");
    if let Err(e) = tandem_config::load_str(text, file, &ctx, &mut set) {
        assert_eq!(e.file, file);
        assert!(!e.message.is_empty());
        // Lines as YAML counts them: `\r\n`, `\n` and a lone `\r` each
        // end one.
        let lines = text.replace("\r\n", "\n").replace('\r', "\n").lines().count();
        assert!(e.line <= lines + 1, "{e:?}");
    }
    // Configuration documents are read by their own function.
    let _ = tandem_config::load_configuration_str(text, file);
});
