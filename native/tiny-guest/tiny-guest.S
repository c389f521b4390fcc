/*
 * tiny-guest: the smallest guest that makes a Cloud Hypervisor VM observable.
 *
 * Why it exists: on the PVM hosts an unmodified Linux kernel does not boot, yet tests need a real VM whose
 * life (boot, pause/resume, snapshot/restore, reboot, power-off, panic) shows on the serial console. This is
 * a PVH ELF that CH boots directly as `payload.kernel`: it prints `tiny-guest: boot ...` once, then
 * `tiny-guest: tick N` lines on COM1 with the counter kept in guest memory, so the numbers carry on across
 * pause/resume and snapshot/restore, and start again from 1 after a reboot (CH reloads the ELF).
 *
 * Kernel command line options (all `name=decimal`, matched at the start of a word):
 *   tick_ms=N         delay between lines in milliseconds (default 300)
 *   poweroff_after=N  after line N, power off through CH's ACPI shutdown device (port 0x600, value 0x34)
 *   reboot_after=N    after line N, reboot through the same device (value 1)
 *   panic_after=N     after line N, report a panic through CH's pvpanic PCI device (`--pvpanic`), then halt
 *   halt_after=N      after line N, stop: the vCPU halts for good and the VM stays Running
 *
 * Entry state (PVH boot ABI): 32-bit protected mode, paging off, flat segments, interrupts off, no stack,
 * EBX = physical address of struct hvm_start_info. Everything here is identity-mapped physical memory.
 *
 * Built with `as --64` and `ld -m elf_x86_64 -Ttext=0x100000` only (see Makefile): no C preprocessor, so
 * constants are `.set`, not `#define`.
 */

        .set COM1, 0x3f8                /* CH's 8250 UART, data register */
        .set ACPI_SLEEP, 0x600          /* CH's AcpiShutdownDevice */
        .set SLEEP_S5_EN, 0x34          /* SLP_TYP=5 (S5, as in CH's DSDT) << 2 | SLP_EN (1 << 5) */
        .set SLEEP_REBOOT, 1            /* CH's shutdown device treats 1 as a reset */
        .set PCI_ADDR, 0xcf8            /* legacy PCI config mechanism #1, which CH serves on segment 0 */
        .set PCI_DATA, 0xcfc
        .set PVPANIC_ID, 0x00111b36     /* device 0x0011, vendor 0x1b36 (Red Hat) */
        .set PVPANIC_PANICKED, 1
        .set HVM_START_MAGIC, 0x336ec578
        .set START_INFO_CMDLINE, 24     /* hvm_start_info.cmdline_paddr (u64; below 4 GiB in CH) */
        .set DEFAULT_TICK_MS, 300
        /*
         * `loop` iterations per millisecond when the TSC frequency is unknown (no CPUID 0x40000010). Measured
         * under CH on the PVM host, where this guest runs ~1.5 million loop iterations a second; hardware KVM
         * is ~1000x faster but always has the TSC leaf, so this is only a fallback.
         */
        .set SPIN_PER_MS, 1500

/*
 * The PVH entry note. linux-loader only looks for it inside a PT_NOTE program header, and ld only makes one
 * for an allocated section of type SHT_NOTE, hence "a" and @note.
 */
        .section .note.Xen, "a", @note
        .p2align 2
        .long 4                         /* namesz: "Xen\0" */
        .long 4                         /* descsz: a 32-bit physical entry address */
        .long 18                        /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .long _start

        .text
        .code32
        .globl _start
_start:
        cli
        cld
        mov $stack_top, %esp
        /* Keep only a command line CH really gave us: a wrong EBX must not make us parse garbage. */
        xor %eax, %eax
        cmpl $HVM_START_MAGIC, (%ebx)
        jne 1f
        mov START_INFO_CMDLINE(%ebx), %eax
1:      mov %eax, cmdline

        /*
         * Under CH, CPUID 0x40000010 EAX is the guest TSC frequency in kHz (set when the host TSC is
         * invariant). Pacing by the TSC keeps ~tick_ms between lines whatever the emulation speed.
         */
        mov $0x40000000, %eax
        cpuid
        cmp $0x40000010, %eax
        jb 1f
        mov $0x40000010, %eax
        cpuid
        mov %eax, tsc_khz
1:
        mov $opt_tick_ms, %edi
        call find_opt
        test %eax, %eax
        jnz 1f
        mov $DEFAULT_TICK_MS, %eax
1:      mov %eax, tick_ms
        mov $opt_poweroff, %edi
        call find_opt
        mov %eax, poweroff_after
        mov $opt_reboot, %edi
        call find_opt
        mov %eax, reboot_after
        mov $opt_panic, %edi
        call find_opt
        mov %eax, panic_after
        mov $opt_halt, %edi
        call find_opt
        mov %eax, halt_after

        /* One line per boot, so a reboot is visible on the console and a test can check its cmdline. */
        mov $msg_boot, %esi
        call puts
        mov cmdline, %esi
        test %esi, %esi
        jnz 1f
        mov $msg_none, %esi
1:      call puts
        mov $msg_tsc, %esi
        call puts
        mov tsc_khz, %eax
        call putdec
        mov $msg_nl, %esi
        call puts

tick:
        /* The counter lives in .data: restored with guest memory, reset when CH reloads the ELF on reboot. */
        incl counter
        mov $msg_tick, %esi
        call puts
        mov counter, %eax
        call putdec
        mov $msg_nl, %esi
        call puts

        mov counter, %eax
        cmp poweroff_after, %eax
        je do_poweroff
        cmp reboot_after, %eax
        je do_reboot
        cmp panic_after, %eax
        je do_panic
        cmp halt_after, %eax
        je do_halt

        mov tick_ms, %eax
        call delay_ms
        jmp tick

do_poweroff:
        mov $msg_poweroff, %esi
        call puts
        mov $SLEEP_S5_EN, %al
        mov $ACPI_SLEEP, %dx
        outb %al, %dx
        jmp halt_forever                /* CH stops the vCPUs; never reached unless the write was ignored */

do_reboot:
        mov $msg_reboot, %esi
        call puts
        mov $SLEEP_REBOOT, %al
        mov $ACPI_SLEEP, %dx
        outb %al, %dx
        jmp halt_forever

do_panic:
        /* Find pvpanic on bus 0 (CH puts every PCI device there, function 0); its BAR0 is 32-bit MMIO. */
        xor %ecx, %ecx                  /* device number */
1:      mov %ecx, %eax
        shl $11, %eax
        or $0x80000000, %eax            /* enable bit | bus 0 | device | function 0 | register 0 */
        mov $PCI_ADDR, %dx
        outl %eax, %dx
        mov $PCI_DATA, %dx
        inl %dx, %eax
        cmp $PVPANIC_ID, %eax
        je 2f
        inc %ecx
        cmp $32, %ecx
        jb 1b
        mov $msg_nopanic, %esi          /* CH started without --pvpanic: say so, then behave as panicked */
        call puts
        jmp halt_forever
2:      mov %ecx, %eax
        shl $11, %eax
        or $0x80000010, %eax            /* register 0x10: BAR0 */
        mov $PCI_ADDR, %dx
        outl %eax, %dx
        mov $PCI_DATA, %dx
        inl %dx, %eax
        and $0xfffffff0, %eax           /* drop the memory-BAR flag bits */
        mov %eax, %ebx
        mov $msg_panic, %esi
        call puts
        mov %ebx, %eax
        call puthex
        mov $msg_nl, %esi
        call puts
        /*
         * CH decodes the BAR whatever the command register says (it ignores memory-space enable), so no
         * config write is needed. It only emits a "guest"/"panic" event: the VM keeps running, as a
         * panicked Linux would, halted.
         */
        movb $PVPANIC_PANICKED, (%ebx)
        jmp halt_forever

do_halt:
        mov $msg_halt, %esi
        call puts
halt_forever:
        cli
        hlt
        jmp halt_forever

/* puts: write the NUL-terminated string at ESI to COM1. CH's UART never holds a byte back, so no LSR poll. */
puts:
        mov $COM1, %dx
1:      lodsb
        test %al, %al
        jz 2f
        outb %al, %dx
        jmp 1b
2:      ret

/* putdec: write EAX as unsigned decimal. */
putdec:
        mov $numbuf_end, %edi
        movb $0, (%edi)
        mov $10, %ecx
1:      xor %edx, %edx
        div %ecx
        add $'0', %dl
        dec %edi
        mov %dl, (%edi)
        test %eax, %eax
        jnz 1b
        mov %edi, %esi
        jmp puts

/* puthex: write EAX as 0x followed by 8 hex digits. */
puthex:
        mov $numbuf_end, %edi
        movb $0, (%edi)
        mov $8, %ecx
1:      mov %al, %dl
        and $0xf, %dl
        add $'0', %dl
        cmp $'9', %dl
        jbe 2f
        add $('a' - '9' - 1), %dl
2:      dec %edi
        mov %dl, (%edi)
        shr $4, %eax
        loop 1b
        sub $2, %edi
        movw $0x7830, (%edi)            /* "0x" */
        mov %edi, %esi
        jmp puts

/* delay_ms: busy-wait EAX milliseconds, by the TSC when its frequency is known. No interrupts needed. */
delay_ms:
        mov tsc_khz, %ecx
        test %ecx, %ecx
        jz 3f
        mul %ecx                        /* EDX:EAX = ms * kHz = TSC ticks to wait */
        mov %eax, %esi
        mov %edx, %edi
        rdtsc
        add %eax, %esi
        adc %edx, %edi                  /* EDI:ESI = deadline */
1:      pause
        rdtsc
        sub %esi, %eax
        sbb %edi, %edx
        js 1b                           /* now - deadline < 0: not yet */
        ret
3:      imul $SPIN_PER_MS, %eax, %ecx
        jecxz 5f
4:      loop 4b
5:      ret

/*
 * find_opt: EDI = "name=" (NUL-terminated). Returns in EAX the decimal value of the first word of the command
 * line that starts with it, or 0 when there is none (so 0 means "option off" for every option).
 */
find_opt:
        mov cmdline, %esi
        test %esi, %esi
        jz 9f
        mov %esi, %ebx                  /* start of the command line */
1:      cmpb $0, (%esi)
        je 9f
        cmp %ebx, %esi
        je 2f
        cmpb $' ', -1(%esi)             /* only match at a word start: "xpanic_after=" is not ours */
        jne 5f
2:      mov %esi, %ecx
        mov %edi, %edx
3:      mov (%edx), %al
        test %al, %al
        jz 6f                           /* whole name matched */
        cmp (%ecx), %al
        jne 5f
        inc %ecx
        inc %edx
        jmp 3b
5:      inc %esi
        jmp 1b
6:      xor %eax, %eax
7:      movzbl (%ecx), %edx
        sub $'0', %edx
        cmp $9, %edx
        ja 8f
        imul $10, %eax, %eax
        add %edx, %eax
        inc %ecx
        jmp 7b
8:      ret
9:      xor %eax, %eax
        ret

        .section .rodata
opt_tick_ms:    .asciz "tick_ms="
opt_poweroff:   .asciz "poweroff_after="
opt_reboot:     .asciz "reboot_after="
opt_panic:      .asciz "panic_after="
opt_halt:       .asciz "halt_after="
msg_boot:       .asciz "tiny-guest: boot cmdline="
msg_none:       .asciz "(none)"
msg_tsc:        .asciz " tsc_khz="
msg_tick:       .asciz "tiny-guest: tick "
msg_poweroff:   .asciz "tiny-guest: poweroff\n"
msg_reboot:     .asciz "tiny-guest: reboot\n"
msg_panic:      .asciz "tiny-guest: panic pvpanic="
msg_nopanic:    .asciz "tiny-guest: panic pvpanic=none\n"
msg_halt:       .asciz "tiny-guest: halt\n"
msg_nl:         .asciz "\n"

        .data
        .p2align 2
counter:        .long 0
cmdline:        .long 0
tsc_khz:        .long 0
tick_ms:        .long 0
poweroff_after: .long 0
reboot_after:   .long 0
panic_after:    .long 0
halt_after:     .long 0
numbuf:         .space 12
numbuf_end:     .byte 0

        .bss
        .p2align 4
        .space 4096
stack_top:
