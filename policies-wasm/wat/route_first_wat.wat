;; Route selection, written by hand in WebAssembly text: the first candidate whose vif is
;; up. Proves the policy ABI v1 is language-neutral: no SDK, just the documented layout.
;;
;; Query buffer at 1024 (256 bytes): byte 2 = candidate count, candidates from offset 40,
;; 11 bytes each, byte 2 of a candidate = up. Decision at offset 128: choice (0xff = none),
;; flags (bit 0 = cacheable).
(module
  (memory (export "memory") 1)
  (func (export "iipnic_abi_version") (result i32) (i32.const 0x00010000))
  (func (export "iipnic_query_buffer") (result i32) (i32.const 1024))
  (func (export "iipnic_config_buffer") (param i32) (result i32) (i32.const 2048))
  (func (export "iipnic_init") (param i32) (result i32) (i32.const 0))
  (func (export "iipnic_self_test") (result i32) (i32.const 0))
  (func (export "route_select") (result i32)
    (local $i i32) (local $count i32) (local $choice i32)
    (local.set $count (i32.load8_u (i32.const 1026)))
    (local.set $choice (i32.const 0xff))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        ;; up byte of candidate i: 1024 + 40 + 11 * i + 2
        (if (i32.load8_u (i32.add (i32.const 1066) (i32.mul (local.get $i) (i32.const 11))))
          (then (local.set $choice (local.get $i)) (br $done)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.store8 (i32.const 1152) (local.get $choice))
    (i32.store8 (i32.const 1153) (i32.const 1))
    (i32.const 0)))
