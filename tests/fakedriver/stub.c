/* The body of every fake driver library other than NVML: a real shared object, linked
 * once per SONAME, so that ldconfig, the loader and ELF readers treat it as the real one. */
#ifdef FAKE_TLS_NOTE
/* NVIDIA's libnvidia-tls carries an ABI tag "Linux 2.3.99" (the new TLS model); libnvc
 * selects the TLS library by it, so the fake carries it too. */
__asm__(".pushsection .note.ABI-tag,\"a\",@note\n"
        ".balign 4\n"
        ".long 4\n"          /* name size: "GNU\0" */
        ".long 16\n"         /* descriptor size */
        ".long 1\n"          /* NT_GNU_ABI_TAG */
        ".asciz \"GNU\"\n"
        ".long 0, 2, 3, 99\n"
        ".popsection\n");
#endif

__attribute__((visibility("default"))) const char fake_nvidia_driver_library[] =
    "fake NVIDIA driver library (nvhook tests)";
