;; gradfleet's fast gradient kernel: WebAssembly SIMD (f32x4) primitives that
;; src/core/fast-kernel.ts strings together into a batched forward/backward
;; pass. Assembled by src/core/wasm/assemble.ts into kernel-bytes.ts (the
;; committed bytes); test/fast-kernel.test.ts checks the two agree.
;;
;; Conventions
;; - Every pointer is a byte address in the imported memory; the caller lays
;;   the buffers out and aligns them to 16 bytes.
;; - Matrices are row-major with a row stride of nP floats, nP the layer width
;;   rounded up to a multiple of 4 ("padded"). Padding lanes of weights and
;;   biases are zero, so every f32x4 op sees whole vectors and no scalar tail
;;   is needed for the output dimension; loops over an INPUT dimension run over
;;   the real width only.
;; - Determinism: only IEEE-754 float ops that WebAssembly defines bit-exactly
;;   (no fused multiply-add, no relaxed SIMD), each sum taken in a fixed order:
;;   examples in order, inputs in increasing index. The same inputs give the
;;   same bits on every engine and CPU.
(module
  (import "env" "memory" (memory 1))

  ;; ---------------------------------------------------------------------
  ;; scan: gathers the nonzero pixels of `rows` byte rows (row r starts at
  ;; the address rowPtr[r], px bytes) into a sparse list: for row r, entries
  ;; [start[r], start[r+1]) of idx (i32: pixel index k times kBytes, the
  ;; byte offset of weight row k, which spares a multiply per use) and val
  ;; (f32: looked up in the 256-entry f32 table `scale`, i.e. byte/255). 16 pixels
  ;; at a time: a compare and a bitmask find the nonzero lanes, so MNIST's
  ;; ~81% of zeros cost almost nothing. Returns the number of entries.
  (func (export "scan")
    (param $rows i32) (param $rowPtr i32) (param $px i32) (param $kBytes i32)
    (param $start i32) (param $idx i32) (param $val i32) (param $scale i32) (result i32)
    (local $r i32) (local $nz i32) (local $row i32) (local $k i32) (local $m i32)
    (local $full i32) (local $b i32) (local $v i32)
    (local.set $full (i32.and (local.get $px) (i32.const -16)))
    (block $rdone
      (loop $rloop
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
        (i32.store (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2))) (local.get $nz))
        (local.set $row (i32.load (i32.add (local.get $rowPtr) (i32.shl (local.get $r) (i32.const 2)))))
        (local.set $k (i32.const 0))
        (block $vdone
          (loop $vloop
            (br_if $vdone (i32.ge_u (local.get $k) (local.get $full)))
            (local.set $m
              (i8x16.bitmask
                (i8x16.ne (v128.load (i32.add (local.get $row) (local.get $k))) (v128.const i32x4 0 0 0 0))))
            (block $mdone
              (loop $mloop
                (br_if $mdone (i32.eqz (local.get $m)))
                (local.set $b (i32.add (local.get $k) (i32.ctz (local.get $m))))
                (i32.store (i32.add (local.get $idx) (i32.shl (local.get $nz) (i32.const 2)))
                  (i32.mul (local.get $b) (local.get $kBytes)))
                (f32.store (i32.add (local.get $val) (i32.shl (local.get $nz) (i32.const 2)))
                  (f32.load (i32.add (local.get $scale)
                    (i32.shl (i32.load8_u (i32.add (local.get $row) (local.get $b))) (i32.const 2)))))
                (local.set $nz (i32.add (local.get $nz) (i32.const 1)))
                (local.set $m (i32.and (local.get $m) (i32.sub (local.get $m) (i32.const 1))))
                (br $mloop)))
            (local.set $k (i32.add (local.get $k) (i32.const 16)))
            (br $vloop)))
        ;; The last px mod 16 pixels, one at a time.
        (block $tdone
          (loop $tloop
            (br_if $tdone (i32.ge_u (local.get $k) (local.get $px)))
            (local.set $v (i32.load8_u (i32.add (local.get $row) (local.get $k))))
            (if (local.get $v)
              (then
                (i32.store (i32.add (local.get $idx) (i32.shl (local.get $nz) (i32.const 2)))
                  (i32.mul (local.get $k) (local.get $kBytes)))
                (f32.store (i32.add (local.get $val) (i32.shl (local.get $nz) (i32.const 2)))
                  (f32.load (i32.add (local.get $scale) (i32.shl (local.get $v) (i32.const 2)))))
                (local.set $nz (i32.add (local.get $nz) (i32.const 1)))))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $tloop)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rloop)))
    (i32.store (i32.add (local.get $start) (i32.shl (local.get $rows) (i32.const 2))) (local.get $nz))
    (local.get $nz))

  ;; ---------------------------------------------------------------------
  ;; touch: reads one byte of every 64-byte line of `rows` byte rows (row r
  ;; at rowPtr[r], px bytes) and returns their xor. The loads are independent,
  ;; so the CPU fetches many lines from memory at once; scan then finds them
  ;; in cache instead of waiting on each row's misses one after another
  ;; (WebAssembly has no prefetch instruction).
  (func (export "touch") (param $rows i32) (param $rowPtr i32) (param $px i32) (result i32)
    (local $r i32) (local $row i32) (local $k i32) (local $acc i32)
    (block $rdone
      (loop $rloop
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $row (i32.load (i32.add (local.get $rowPtr) (i32.shl (local.get $r) (i32.const 2)))))
        (local.set $k (i32.const 0))
        (block $kdone
          (loop $kloop
            (br_if $kdone (i32.ge_u (local.get $k) (local.get $px)))
            (local.set $acc (i32.xor (local.get $acc) (i32.load8_u (i32.add (local.get $row) (local.get $k)))))
            (local.set $k (i32.add (local.get $k) (i32.const 64)))
            (br $kloop)))
        ;; The row's last byte may sit on one more line.
        (local.set $acc
          (i32.xor (local.get $acc) (i32.load8_u (i32.sub (i32.add (local.get $row) (local.get $px)) (i32.const 1)))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rloop)))
    (local.get $acc))

  ;; ---------------------------------------------------------------------
  ;; sparse_fwd: z[r,:] = bias + sum over row r's sparse entries (k, x) of
  ;; x * W[k,:], entries in increasing k. W has nOutP floats per row; idx
  ;; holds k times the row's byte size (see scan). Outputs go 16 at a time
  ;; (four f32x4 accumulators held in registers across the whole sum), then 4
  ;; at a time for the rest. (Two interleaved chains of accumulators measured
  ;; slower: the engine spills registers.)
  (func (export "sparse_fwd")
    (param $rows i32) (param $start i32) (param $idx i32) (param $val i32)
    (param $w i32) (param $nOutP i32) (param $bias i32) (param $z i32)
    (local $rb i32) (local $r i32) (local $q0 i32) (local $q1 i32) (local $q i32)
    (local $jb i32) (local $p i32) (local $zr i32)
    (local $s v128) (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local.set $rb (i32.shl (local.get $nOutP) (i32.const 2)))
    (block $rdone
      (loop $rloop
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
        ;; q0, q1 as byte offsets into idx and val.
        (local.set $q0 (i32.shl (i32.load (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))) (i32.const 2)))
        (local.set $q1 (i32.shl (i32.load offset=4 (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))) (i32.const 2)))
        (local.set $zr (i32.add (local.get $z) (i32.mul (local.get $r) (local.get $rb))))
        (local.set $jb (i32.const 0))
        (block $bdone
          (loop $bloop
            (br_if $bdone (i32.gt_u (i32.add (local.get $jb) (i32.const 64)) (local.get $rb)))
            (local.set $a0 (v128.load offset=0 (i32.add (local.get $bias) (local.get $jb))))
            (local.set $a1 (v128.load offset=16 (i32.add (local.get $bias) (local.get $jb))))
            (local.set $a2 (v128.load offset=32 (i32.add (local.get $bias) (local.get $jb))))
            (local.set $a3 (v128.load offset=48 (i32.add (local.get $bias) (local.get $jb))))
            (local.set $q (local.get $q0))
            (block $qdone
              (loop $qloop
                (br_if $qdone (i32.ge_u (local.get $q) (local.get $q1)))
                (local.set $s (f32x4.splat (f32.load (i32.add (local.get $val) (local.get $q)))))
                (local.set $p
                  (i32.add (i32.add (local.get $w) (local.get $jb)) (i32.load (i32.add (local.get $idx) (local.get $q)))))
                (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s) (v128.load offset=0 (local.get $p)))))
                (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s) (v128.load offset=16 (local.get $p)))))
                (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s) (v128.load offset=32 (local.get $p)))))
                (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s) (v128.load offset=48 (local.get $p)))))
                (local.set $q (i32.add (local.get $q) (i32.const 4)))
                (br $qloop)))
            (v128.store offset=0 (i32.add (local.get $zr) (local.get $jb)) (local.get $a0))
            (v128.store offset=16 (i32.add (local.get $zr) (local.get $jb)) (local.get $a1))
            (v128.store offset=32 (i32.add (local.get $zr) (local.get $jb)) (local.get $a2))
            (v128.store offset=48 (i32.add (local.get $zr) (local.get $jb)) (local.get $a3))
            (local.set $jb (i32.add (local.get $jb) (i32.const 64)))
            (br $bloop)))
        (block $cdone
          (loop $cloop
            (br_if $cdone (i32.ge_u (local.get $jb) (local.get $rb)))
            (local.set $a0 (v128.load (i32.add (local.get $bias) (local.get $jb))))
            (local.set $q (local.get $q0))
            (block $qdone1
              (loop $qloop1
                (br_if $qdone1 (i32.ge_u (local.get $q) (local.get $q1)))
                (local.set $p
                  (i32.add (i32.add (local.get $w) (local.get $jb)) (i32.load (i32.add (local.get $idx) (local.get $q)))))
                (local.set $a0
                  (f32x4.add (local.get $a0)
                    (f32x4.mul (f32x4.splat (f32.load (i32.add (local.get $val) (local.get $q)))) (v128.load (local.get $p)))))
                (local.set $q (i32.add (local.get $q) (i32.const 4)))
                (br $qloop1)))
            (v128.store (i32.add (local.get $zr) (local.get $jb)) (local.get $a0))
            (local.set $jb (i32.add (local.get $jb) (i32.const 16)))
            (br $cloop)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rloop))))

  ;; ---------------------------------------------------------------------
  ;; dense_fwd: z[r,:] = bias + sum_{k < nK} a[r,k] * W[k,:], k increasing.
  ;; a has aP floats per row, W and z nOutP. Blocked as sparse_fwd. Also the
  ;; back-propagation product (a = deltas, W = transposed weights, bias = zeros).
  (func (export "dense_fwd")
    (param $rows i32) (param $a i32) (param $aP i32) (param $nK i32)
    (param $w i32) (param $nOutP i32) (param $bias i32) (param $z i32)
    (local $rb i32) (local $ab i32) (local $r i32) (local $ar i32) (local $aEnd i32) (local $pa i32)
    (local $jb i32) (local $p i32) (local $zr i32)
    (local $s v128) (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local.set $rb (i32.shl (local.get $nOutP) (i32.const 2)))
    (local.set $ab (i32.shl (local.get $aP) (i32.const 2)))
    (block $rdone
      (loop $rloop
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $ar (i32.add (local.get $a) (i32.mul (local.get $r) (local.get $ab))))
        (local.set $aEnd (i32.add (local.get $ar) (i32.shl (local.get $nK) (i32.const 2))))
        (local.set $zr (i32.add (local.get $z) (i32.mul (local.get $r) (local.get $rb))))
        (local.set $jb (i32.const 0))
        (block $bdone
          (loop $bloop
            (br_if $bdone (i32.gt_u (i32.add (local.get $jb) (i32.const 64)) (local.get $rb)))
            (local.set $a0 (v128.load offset=0 (i32.add (local.get $bias) (local.get $jb))))
            (local.set $a1 (v128.load offset=16 (i32.add (local.get $bias) (local.get $jb))))
            (local.set $a2 (v128.load offset=32 (i32.add (local.get $bias) (local.get $jb))))
            (local.set $a3 (v128.load offset=48 (i32.add (local.get $bias) (local.get $jb))))
            (local.set $pa (local.get $ar))
            (local.set $p (i32.add (local.get $w) (local.get $jb)))
            (block $kdone
              (loop $kloop
                (br_if $kdone (i32.ge_u (local.get $pa) (local.get $aEnd)))
                (local.set $s (f32x4.splat (f32.load (local.get $pa))))
                (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s) (v128.load offset=0 (local.get $p)))))
                (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s) (v128.load offset=16 (local.get $p)))))
                (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s) (v128.load offset=32 (local.get $p)))))
                (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s) (v128.load offset=48 (local.get $p)))))
                (local.set $pa (i32.add (local.get $pa) (i32.const 4)))
                (local.set $p (i32.add (local.get $p) (local.get $rb)))
                (br $kloop)))
            (v128.store offset=0 (i32.add (local.get $zr) (local.get $jb)) (local.get $a0))
            (v128.store offset=16 (i32.add (local.get $zr) (local.get $jb)) (local.get $a1))
            (v128.store offset=32 (i32.add (local.get $zr) (local.get $jb)) (local.get $a2))
            (v128.store offset=48 (i32.add (local.get $zr) (local.get $jb)) (local.get $a3))
            (local.set $jb (i32.add (local.get $jb) (i32.const 64)))
            (br $bloop)))
        (block $cdone
          (loop $cloop
            (br_if $cdone (i32.ge_u (local.get $jb) (local.get $rb)))
            (local.set $a0 (v128.load (i32.add (local.get $bias) (local.get $jb))))
            (local.set $pa (local.get $ar))
            (local.set $p (i32.add (local.get $w) (local.get $jb)))
            (block $kdone1
              (loop $kloop1
                (br_if $kdone1 (i32.ge_u (local.get $pa) (local.get $aEnd)))
                (local.set $a0
                  (f32x4.add (local.get $a0)
                    (f32x4.mul (f32x4.splat (f32.load (local.get $pa))) (v128.load (local.get $p)))))
                (local.set $pa (i32.add (local.get $pa) (i32.const 4)))
                (local.set $p (i32.add (local.get $p) (local.get $rb)))
                (br $kloop1)))
            (v128.store (i32.add (local.get $zr) (local.get $jb)) (local.get $a0))
            (local.set $jb (i32.add (local.get $jb) (i32.const 16)))
            (br $cloop)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rloop))))

  ;; ---------------------------------------------------------------------
  ;; sparse_dw: for each row r in order, db += d[r,:] and, for each of row r's
  ;; sparse entries (k, x) (idx premultiplied as for sparse_fwd),
  ;; dW[k,:] += x * d[r,:]. Every element of dW and db is summed over the
  ;; rows in order, whatever the blocking.
  (func (export "sparse_dw")
    (param $rows i32) (param $start i32) (param $idx i32) (param $val i32)
    (param $d i32) (param $nOutP i32) (param $dw i32) (param $db i32)
    (local $rb i32) (local $r i32) (local $q0 i32) (local $q1 i32) (local $q i32)
    (local $jb i32) (local $p i32) (local $dr i32)
    (local $s v128) (local $d0 v128) (local $d1 v128) (local $d2 v128) (local $d3 v128)
    (local.set $rb (i32.shl (local.get $nOutP) (i32.const 2)))
    (block $rdone
      (loop $rloop
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $q0 (i32.load (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))))
        (local.set $q1 (i32.load offset=4 (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))))
        (local.set $dr (i32.add (local.get $d) (i32.mul (local.get $r) (local.get $rb))))
        (local.set $jb (i32.const 0))
        (block $bdone
          (loop $bloop
            (br_if $bdone (i32.gt_u (i32.add (local.get $jb) (i32.const 64)) (local.get $rb)))
            (local.set $d0 (v128.load offset=0 (i32.add (local.get $dr) (local.get $jb))))
            (local.set $d1 (v128.load offset=16 (i32.add (local.get $dr) (local.get $jb))))
            (local.set $d2 (v128.load offset=32 (i32.add (local.get $dr) (local.get $jb))))
            (local.set $d3 (v128.load offset=48 (i32.add (local.get $dr) (local.get $jb))))
            (local.set $p (i32.add (local.get $db) (local.get $jb)))
            (v128.store offset=0 (local.get $p) (f32x4.add (v128.load offset=0 (local.get $p)) (local.get $d0)))
            (v128.store offset=16 (local.get $p) (f32x4.add (v128.load offset=16 (local.get $p)) (local.get $d1)))
            (v128.store offset=32 (local.get $p) (f32x4.add (v128.load offset=32 (local.get $p)) (local.get $d2)))
            (v128.store offset=48 (local.get $p) (f32x4.add (v128.load offset=48 (local.get $p)) (local.get $d3)))
            (local.set $q (local.get $q0))
            (block $qdone
              (loop $qloop
                (br_if $qdone (i32.ge_u (local.get $q) (local.get $q1)))
                (local.set $s (f32x4.splat (f32.load (i32.add (local.get $val) (i32.shl (local.get $q) (i32.const 2))))))
                (local.set $p
                  (i32.add (i32.add (local.get $dw) (local.get $jb))
                    (i32.load (i32.add (local.get $idx) (i32.shl (local.get $q) (i32.const 2))))))
                (v128.store offset=0 (local.get $p)
                  (f32x4.add (v128.load offset=0 (local.get $p)) (f32x4.mul (local.get $s) (local.get $d0))))
                (v128.store offset=16 (local.get $p)
                  (f32x4.add (v128.load offset=16 (local.get $p)) (f32x4.mul (local.get $s) (local.get $d1))))
                (v128.store offset=32 (local.get $p)
                  (f32x4.add (v128.load offset=32 (local.get $p)) (f32x4.mul (local.get $s) (local.get $d2))))
                (v128.store offset=48 (local.get $p)
                  (f32x4.add (v128.load offset=48 (local.get $p)) (f32x4.mul (local.get $s) (local.get $d3))))
                (local.set $q (i32.add (local.get $q) (i32.const 1)))
                (br $qloop)))
            (local.set $jb (i32.add (local.get $jb) (i32.const 64)))
            (br $bloop)))
        (block $cdone
          (loop $cloop
            (br_if $cdone (i32.ge_u (local.get $jb) (local.get $rb)))
            (local.set $d0 (v128.load (i32.add (local.get $dr) (local.get $jb))))
            (local.set $p (i32.add (local.get $db) (local.get $jb)))
            (v128.store (local.get $p) (f32x4.add (v128.load (local.get $p)) (local.get $d0)))
            (local.set $q (local.get $q0))
            (block $qdone1
              (loop $qloop1
                (br_if $qdone1 (i32.ge_u (local.get $q) (local.get $q1)))
                (local.set $p
                  (i32.add (i32.add (local.get $dw) (local.get $jb))
                    (i32.load (i32.add (local.get $idx) (i32.shl (local.get $q) (i32.const 2))))))
                (v128.store (local.get $p)
                  (f32x4.add (v128.load (local.get $p))
                    (f32x4.mul
                      (f32x4.splat (f32.load (i32.add (local.get $val) (i32.shl (local.get $q) (i32.const 2)))))
                      (local.get $d0))))
                (local.set $q (i32.add (local.get $q) (i32.const 1)))
                (br $qloop1)))
            (local.set $jb (i32.add (local.get $jb) (i32.const 16)))
            (br $cloop)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rloop))))

  ;; ---------------------------------------------------------------------
  ;; dense_dw: for each row r in order, db += d[r,:] and, for k < nK with
  ;; a[r,k] != 0 (as the reference kernel, which skips zero activations),
  ;; dW[k,:] += a[r,k] * d[r,:].
  (func (export "dense_dw")
    (param $rows i32) (param $a i32) (param $aP i32) (param $nK i32)
    (param $d i32) (param $nOutP i32) (param $dw i32) (param $db i32)
    (local $rb i32) (local $ab i32) (local $r i32) (local $ar i32) (local $aEnd i32) (local $pa i32)
    (local $jb i32) (local $p i32) (local $dr i32) (local $x f32)
    (local $s v128) (local $d0 v128) (local $d1 v128) (local $d2 v128) (local $d3 v128)
    (local.set $rb (i32.shl (local.get $nOutP) (i32.const 2)))
    (local.set $ab (i32.shl (local.get $aP) (i32.const 2)))
    (block $rdone
      (loop $rloop
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $ar (i32.add (local.get $a) (i32.mul (local.get $r) (local.get $ab))))
        (local.set $aEnd (i32.add (local.get $ar) (i32.shl (local.get $nK) (i32.const 2))))
        (local.set $dr (i32.add (local.get $d) (i32.mul (local.get $r) (local.get $rb))))
        (local.set $jb (i32.const 0))
        (block $bdone
          (loop $bloop
            (br_if $bdone (i32.gt_u (i32.add (local.get $jb) (i32.const 64)) (local.get $rb)))
            (local.set $d0 (v128.load offset=0 (i32.add (local.get $dr) (local.get $jb))))
            (local.set $d1 (v128.load offset=16 (i32.add (local.get $dr) (local.get $jb))))
            (local.set $d2 (v128.load offset=32 (i32.add (local.get $dr) (local.get $jb))))
            (local.set $d3 (v128.load offset=48 (i32.add (local.get $dr) (local.get $jb))))
            (local.set $p (i32.add (local.get $db) (local.get $jb)))
            (v128.store offset=0 (local.get $p) (f32x4.add (v128.load offset=0 (local.get $p)) (local.get $d0)))
            (v128.store offset=16 (local.get $p) (f32x4.add (v128.load offset=16 (local.get $p)) (local.get $d1)))
            (v128.store offset=32 (local.get $p) (f32x4.add (v128.load offset=32 (local.get $p)) (local.get $d2)))
            (v128.store offset=48 (local.get $p) (f32x4.add (v128.load offset=48 (local.get $p)) (local.get $d3)))
            (local.set $pa (local.get $ar))
            (local.set $p (i32.add (local.get $dw) (local.get $jb)))
            (block $kdone
              (loop $kloop
                (br_if $kdone (i32.ge_u (local.get $pa) (local.get $aEnd)))
                (local.set $x (f32.load (local.get $pa)))
                (if (f32.ne (local.get $x) (f32.const 0))
                  (then
                    (local.set $s (f32x4.splat (local.get $x)))
                    (v128.store offset=0 (local.get $p)
                      (f32x4.add (v128.load offset=0 (local.get $p)) (f32x4.mul (local.get $s) (local.get $d0))))
                    (v128.store offset=16 (local.get $p)
                      (f32x4.add (v128.load offset=16 (local.get $p)) (f32x4.mul (local.get $s) (local.get $d1))))
                    (v128.store offset=32 (local.get $p)
                      (f32x4.add (v128.load offset=32 (local.get $p)) (f32x4.mul (local.get $s) (local.get $d2))))
                    (v128.store offset=48 (local.get $p)
                      (f32x4.add (v128.load offset=48 (local.get $p)) (f32x4.mul (local.get $s) (local.get $d3))))))
                (local.set $pa (i32.add (local.get $pa) (i32.const 4)))
                (local.set $p (i32.add (local.get $p) (local.get $rb)))
                (br $kloop)))
            (local.set $jb (i32.add (local.get $jb) (i32.const 64)))
            (br $bloop)))
        (block $cdone
          (loop $cloop
            (br_if $cdone (i32.ge_u (local.get $jb) (local.get $rb)))
            (local.set $d0 (v128.load (i32.add (local.get $dr) (local.get $jb))))
            (local.set $p (i32.add (local.get $db) (local.get $jb)))
            (v128.store (local.get $p) (f32x4.add (v128.load (local.get $p)) (local.get $d0)))
            (local.set $pa (local.get $ar))
            (local.set $p (i32.add (local.get $dw) (local.get $jb)))
            (block $kdone1
              (loop $kloop1
                (br_if $kdone1 (i32.ge_u (local.get $pa) (local.get $aEnd)))
                (local.set $x (f32.load (local.get $pa)))
                (if (f32.ne (local.get $x) (f32.const 0))
                  (then
                    (v128.store (local.get $p)
                      (f32x4.add (v128.load (local.get $p))
                        (f32x4.mul (f32x4.splat (local.get $x)) (local.get $d0))))))
                (local.set $pa (i32.add (local.get $pa) (i32.const 4)))
                (local.set $p (i32.add (local.get $p) (local.get $rb)))
                (br $kloop1)))
            (local.set $jb (i32.add (local.get $jb) (i32.const 16)))
            (br $cloop)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rloop))))

  ;; ---------------------------------------------------------------------
  ;; Element-wise ops over n floats (n a multiple of 4). Constants sit in
  ;; locals (the engine keeps them in registers rather than rebuilding each
  ;; v128.const), and min/max are the "pseudo" pmin/pmax, one instruction
  ;; each; with the operand order used here they still pass NaN through.

  ;; sigmoid: dst = 1 / (1 + e^(-src)). e^t is Cephes' expf in f32x4: t is
  ;; clamped to [-87, 88.7], split as t = n·ln2 + r with |r| ≤ ln2/2 (ln2 in
  ;; two parts, Cody-Waite), e^r by a degree-7 polynomial, 2^n built in the
  ;; exponent bits. n = round(t·log2 e) by the 1.5·2^23 trick: adding it
  ;; rounds to an integer (ties to even) that then sits in the low mantissa
  ;; bits. n stays in [-126, 128]; 2^128 comes out as +Infinity, so σ is 0
  ;; for src below about -88 (where the exact σ < 2^-127) and 1 above 87.
  ;; Within 2.5 ulp of the float64 sigmoid elsewhere (test/fast-kernel.test.ts);
  ;; σ(-Infinity) = 0, σ(+Infinity) = 1, NaN stays NaN.
  (func (export "sigmoid") (param $dst i32) (param $src i32) (param $n i32)
    (local $i i32) (local $end i32) (local $t v128) (local $y v128) (local $fx v128) (local $r v128) (local $p v128)
    (local $hi v128) (local $lo v128) (local $log2e v128) (local $magic v128) (local $ln2hi v128) (local $ln2lo v128)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128) (local $c4 v128) (local $c5 v128)
    (local $one v128) (local $bias v128)
    (local.set $hi (v128.const f32x4 88.7 88.7 88.7 88.7))
    (local.set $lo (v128.const f32x4 -87 -87 -87 -87))
    (local.set $log2e (v128.const f32x4 1.44269504088896341 1.44269504088896341 1.44269504088896341 1.44269504088896341))
    (local.set $magic (v128.const f32x4 12582912 12582912 12582912 12582912))
    (local.set $ln2hi (v128.const f32x4 0.693359375 0.693359375 0.693359375 0.693359375))
    (local.set $ln2lo (v128.const f32x4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4))
    (local.set $c0 (v128.const f32x4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4))
    (local.set $c1 (v128.const f32x4 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3))
    (local.set $c2 (v128.const f32x4 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3))
    (local.set $c3 (v128.const f32x4 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2))
    (local.set $c4 (v128.const f32x4 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1))
    (local.set $c5 (v128.const f32x4 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1))
    (local.set $one (v128.const f32x4 1 1 1 1))
    ;; bits(magic + n) = 0x4B400000 + n; 2^n has bits (n + 127) << 23.
    (local.set $bias (v128.const i32x4 -1262485377 -1262485377 -1262485377 -1262485377))
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        ;; t = clamp(-x): pmin(x, c) = c < x ? c : x and pmax(x, c) = x < c ? c : x keep a NaN x.
        (local.set $t
          (f32x4.pmax
            (f32x4.pmin (f32x4.neg (v128.load (i32.add (local.get $src) (local.get $i)))) (local.get $hi))
            (local.get $lo)))
        (local.set $y (f32x4.add (f32x4.mul (local.get $t) (local.get $log2e)) (local.get $magic)))
        (local.set $fx (f32x4.sub (local.get $y) (local.get $magic)))
        (local.set $r
          (f32x4.sub
            (f32x4.sub (local.get $t) (f32x4.mul (local.get $fx) (local.get $ln2hi)))
            (f32x4.mul (local.get $fx) (local.get $ln2lo))))
        ;; p = ((((((c0 r + c1) r + c2) r + c3) r + c4) r + c5) r^2 + r + 1
        (local.set $p (f32x4.add (f32x4.mul (local.get $c0) (local.get $r)) (local.get $c1)))
        (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (local.get $c2)))
        (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (local.get $c3)))
        (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (local.get $c4)))
        (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (local.get $c5)))
        (local.set $p
          (f32x4.add
            (f32x4.add (f32x4.mul (local.get $p) (f32x4.mul (local.get $r) (local.get $r))) (local.get $r))
            (local.get $one)))
        (local.set $p
          (f32x4.mul (local.get $p)
            (i32x4.shl (i32x4.add (local.get $y) (local.get $bias)) (i32.const 23))))
        (v128.store (i32.add (local.get $dst) (local.get $i))
          (f32x4.div (local.get $one) (f32x4.add (local.get $one) (local.get $p))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $loop))))

  ;; relu: dst = src < 0 ? 0 : src (pmax; NaN stays NaN, as the reference's `if (z < 0) z = 0`).
  (func (export "relu") (param $dst i32) (param $src i32) (param $n i32)
    (local $i i32) (local $end i32) (local $zero v128)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (v128.store (i32.add (local.get $dst) (local.get $i))
          (f32x4.pmax (v128.load (i32.add (local.get $src) (local.get $i))) (local.get $zero)))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $loop))))

  ;; dsigmoid: d = (d * a) * (1 - a), σ' from the activation a = σ(z).
  (func (export "dsigmoid") (param $d i32) (param $a i32) (param $n i32)
    (local $i i32) (local $end i32) (local $av v128) (local $one v128)
    (local.set $one (v128.const f32x4 1 1 1 1))
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $av (v128.load (i32.add (local.get $a) (local.get $i))))
        (v128.store (i32.add (local.get $d) (local.get $i))
          (f32x4.mul
            (f32x4.mul (v128.load (i32.add (local.get $d) (local.get $i))) (local.get $av))
            (f32x4.sub (local.get $one) (local.get $av))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $loop))))

  ;; drelu: d = a > 0 ? d : 0.
  (func (export "drelu") (param $d i32) (param $a i32) (param $n i32)
    (local $i i32) (local $end i32) (local $zero v128)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (v128.store (i32.add (local.get $d) (local.get $i))
          (v128.and (v128.load (i32.add (local.get $d) (local.get $i)))
            (f32x4.gt (v128.load (i32.add (local.get $a) (local.get $i))) (local.get $zero))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $loop))))
  ;; ---------------------------------------------------------------------
  ;; Layout helpers.

  ;; transpose: wt[j, k] = w[k, j] for k < nIn, j < nOut; w has nOutP floats
  ;; per row, wt nInP. Padding lanes of wt are left as they are (zero).
  (func (export "transpose") (param $w i32) (param $nIn i32) (param $nOut i32) (param $nOutP i32)
    (param $wt i32) (param $nInP i32)
    (local $k i32) (local $j i32) (local $src i32)
    (block $kdone
      (loop $kloop
        (br_if $kdone (i32.ge_u (local.get $k) (local.get $nIn)))
        (local.set $src (i32.add (local.get $w) (i32.shl (i32.mul (local.get $k) (local.get $nOutP)) (i32.const 2))))
        (local.set $j (i32.const 0))
        (block $jdone
          (loop $jloop
            (br_if $jdone (i32.ge_u (local.get $j) (local.get $nOut)))
            (f32.store
              (i32.add (local.get $wt)
                (i32.shl (i32.add (i32.mul (local.get $j) (local.get $nInP)) (local.get $k)) (i32.const 2)))
              (f32.load (i32.add (local.get $src) (i32.shl (local.get $j) (i32.const 2)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $jloop)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $kloop))))

  ;; copy_rows: copies `rows` rows of rowBytes bytes between two strides
  ;; (padding and unpadding a layer); one bulk copy when both are contiguous.
  (func (export "copy_rows") (param $dst i32) (param $dstStride i32) (param $src i32) (param $srcStride i32)
    (param $rowBytes i32) (param $rows i32)
    (local $r i32)
    (if (i32.and (i32.eq (local.get $dstStride) (local.get $rowBytes)) (i32.eq (local.get $srcStride) (local.get $rowBytes)))
      (then
        (memory.copy (local.get $dst) (local.get $src) (i32.mul (local.get $rowBytes) (local.get $rows)))
        (return)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $r) (local.get $rows)))
        (memory.copy (local.get $dst) (local.get $src) (local.get $rowBytes))
        (local.set $dst (i32.add (local.get $dst) (local.get $dstStride)))
        (local.set $src (i32.add (local.get $src) (local.get $srcStride)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $loop))))

  ;; add_f64: dst (f64) += src (f32), n values (n even): a chunk's float32
  ;; sums folded into the shard's float64 total.
  (func (export "add_f64") (param $dst i32) (param $src i32) (param $n i32)
    (local $i i32) (local $end i32) (local $p i32)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $p (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 1))))
        (v128.store (local.get $p)
          (f64x2.add (v128.load (local.get $p))
            (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $src) (local.get $i))))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $loop))))

  ;; to_f32: dst (f32) = src (f64) rounded to nearest, n values.
  (func (export "to_f32") (param $dst i32) (param $src i32) (param $n i32)
    (local $i i32)
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (f32.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (f32.demote_f64 (f64.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 3))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $loop))))
)
