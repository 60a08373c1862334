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
  ;; (f32: looked up in the 256-entry f32 table `scale`, i.e. byte/255), and,
  ;; unless the address pix is 0, pix (i32: the pixel index k itself, from
  ;; which csc sorts the entries by pixel) and count[k] (i32, px of them: how
  ;; many entries pixel k has). 16 pixels
  ;; at a time: a compare and a bitmask find the nonzero lanes, so MNIST's
  ;; ~81% of zeros cost almost nothing. Returns the number of entries.
  (func (export "scan")
    (param $rows i32) (param $rowPtr i32) (param $px i32) (param $kBytes i32)
    (param $start i32) (param $idx i32) (param $val i32) (param $scale i32) (param $pix i32) (param $count i32)
    (result i32)
    (local $r i32) (local $nz i32) (local $row i32) (local $k i32) (local $m i32)
    (local $full i32) (local $b i32) (local $v i32) (local $full64 i32) (local $m64 i64) (local $z v128)
    (local.set $full (i32.and (local.get $px) (i32.const -16)))
    (local.set $full64 (i32.and (local.get $px) (i32.const -64)))
    (if (local.get $pix) (then (memory.fill (local.get $count) (i32.const 0) (i32.shl (local.get $px) (i32.const 2)))))
    (block $rdone
      (loop $rloop
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
        (i32.store (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2))) (local.get $nz))
        (local.set $row (i32.load (i32.add (local.get $rowPtr) (i32.shl (local.get $r) (i32.const 2)))))
        (local.set $k (i32.const 0))
        ;; 64 pixels at a time: four 16-lane masks in one i64, so that the
        ;; loop over its set bits ends (a branch the CPU cannot predict, as
        ;; the count varies) once per 64 pixels instead of once per 16.
        (block $xdone
          (loop $xloop
            (br_if $xdone (i32.ge_u (local.get $k) (local.get $full64)))
            (local.set $b (i32.add (local.get $row) (local.get $k)))
            (local.set $m64
              (i64.or
                (i64.or
                  (i64.extend_i32_u (i8x16.bitmask (i8x16.ne (v128.load offset=0 (local.get $b)) (local.get $z))))
                  (i64.shl (i64.extend_i32_u (i8x16.bitmask (i8x16.ne (v128.load offset=16 (local.get $b)) (local.get $z))))
                    (i64.const 16)))
                (i64.or
                  (i64.shl (i64.extend_i32_u (i8x16.bitmask (i8x16.ne (v128.load offset=32 (local.get $b)) (local.get $z))))
                    (i64.const 32))
                  (i64.shl (i64.extend_i32_u (i8x16.bitmask (i8x16.ne (v128.load offset=48 (local.get $b)) (local.get $z))))
                    (i64.const 48)))))
            ;; Each set bit, lowest first.
            (block $mdone64
              (loop $mloop64
                (br_if $mdone64 (i64.eqz (local.get $m64)))
                (local.set $b (i32.add (local.get $k) (i32.wrap_i64 (i64.ctz (local.get $m64)))))
                (i32.store (i32.add (local.get $idx) (i32.shl (local.get $nz) (i32.const 2)))
                  (i32.mul (local.get $b) (local.get $kBytes)))
                (if (local.get $pix)
                  (then
                    (i32.store (i32.add (local.get $pix) (i32.shl (local.get $nz) (i32.const 2))) (local.get $b))
                    (local.set $v (i32.add (local.get $count) (i32.shl (local.get $b) (i32.const 2))))
                    (i32.store (local.get $v) (i32.add (i32.load (local.get $v)) (i32.const 1)))))
                (f32.store (i32.add (local.get $val) (i32.shl (local.get $nz) (i32.const 2)))
                  (f32.load (i32.add (local.get $scale)
                    (i32.shl (i32.load8_u (i32.add (local.get $row) (local.get $b))) (i32.const 2)))))
                (local.set $nz (i32.add (local.get $nz) (i32.const 1)))
                (local.set $m64 (i64.and (local.get $m64) (i64.sub (local.get $m64) (i64.const 1))))
                (br $mloop64)))
            (local.set $k (i32.add (local.get $k) (i32.const 64)))
            (br $xloop)))
        ;; Then 16 at a time.
        (block $vdone
          (loop $vloop
            (br_if $vdone (i32.ge_u (local.get $k) (local.get $full)))
            (local.set $m
              (i8x16.bitmask
                (i8x16.ne (v128.load (i32.add (local.get $row) (local.get $k))) (local.get $z))))
            (block $mdone
              (loop $mloop
                (br_if $mdone (i32.eqz (local.get $m)))
                (local.set $b (i32.add (local.get $k) (i32.ctz (local.get $m))))
                (i32.store (i32.add (local.get $idx) (i32.shl (local.get $nz) (i32.const 2)))
                  (i32.mul (local.get $b) (local.get $kBytes)))
                (if (local.get $pix)
                  (then
                    (i32.store (i32.add (local.get $pix) (i32.shl (local.get $nz) (i32.const 2))) (local.get $b))
                    (local.set $v (i32.add (local.get $count) (i32.shl (local.get $b) (i32.const 2))))
                    (i32.store (local.get $v) (i32.add (i32.load (local.get $v)) (i32.const 1)))))
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
                (if (local.get $pix)
                  (then
                    (i32.store (i32.add (local.get $pix) (i32.shl (local.get $nz) (i32.const 2))) (local.get $k))
                    ;; $m, not $v: $v still holds the pixel, read for val below.
                    (local.set $m (i32.add (local.get $count) (i32.shl (local.get $k) (i32.const 2))))
                    (i32.store (local.get $m) (i32.add (i32.load (local.get $m)) (i32.const 1)))))
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
  ;; at a time for the rest. The block of outputs is the OUTER loop: all rows
  ;; pass over one 16-column slice of W (784 × 64 bytes, which stays in the L1
  ;; cache) before the next, instead of every row sweeping all of W (400 KB
  ;; for 128 outputs, from L2). Each sum is the same, so are the bits. (Two
  ;; interleaved chains of accumulators measured slower: the engine spills
  ;; registers.)
  (func (export "sparse_fwd")
    (param $rows i32) (param $start i32) (param $idx i32) (param $val i32)
    (param $w i32) (param $nOutP i32) (param $bias i32) (param $z i32)
    (local $rb i32) (local $r i32) (local $q0 i32) (local $q1 i32) (local $q i32)
    (local $jb i32) (local $p i32) (local $zr i32) (local $wj i32)
    (local $b0 v128) (local $b1 v128) (local $b2 v128) (local $b3 v128)
    (local $s v128) (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $a4 v128) (local $a5 v128)
    (local.set $rb (i32.shl (local.get $nOutP) (i32.const 2)))
    ;; Blocks of 24 outputs while at least 40 remain, or exactly 24 (so that
    ;; what is left goes in blocks of 16, not 4: 128 = 4·24 + 2·16). The sum
    ;; of one row is a chain of dependent additions per accumulator, so the
    ;; pass takes about as long with six accumulators as with four, and does
    ;; half as much again. (Eight spill: with their loads, more than the
    ;; engine's sixteen vector registers.)
    (block $wdone
      (loop $wloop
        (local.set $p (i32.sub (local.get $rb) (local.get $jb)))
        (br_if $wdone (i32.and (i32.lt_u (local.get $p) (i32.const 160)) (i32.ne (local.get $p) (i32.const 96))))
        (local.set $wj (i32.add (local.get $w) (local.get $jb)))
        ;; Every row, for this block.
        (local.set $r (i32.const 0))
        (block $rdone2
          (loop $rloop2
            (br_if $rdone2 (i32.ge_u (local.get $r) (local.get $rows)))
            (local.set $q (i32.shl (i32.load (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))) (i32.const 2)))
            (local.set $q1 (i32.shl (i32.load offset=4 (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))) (i32.const 2)))
            (local.set $p (i32.add (local.get $bias) (local.get $jb)))
            (local.set $a0 (v128.load offset=0 (local.get $p)))
            (local.set $a1 (v128.load offset=16 (local.get $p)))
            (local.set $a2 (v128.load offset=32 (local.get $p)))
            (local.set $a3 (v128.load offset=48 (local.get $p)))
            (local.set $a4 (v128.load offset=64 (local.get $p)))
            (local.set $a5 (v128.load offset=80 (local.get $p)))
            ;; The row's entries, in increasing k.
            (block $qdone2
              (loop $qloop2
                (br_if $qdone2 (i32.ge_u (local.get $q) (local.get $q1)))
                (local.set $s (v128.load32_splat (i32.add (local.get $val) (local.get $q))))
                (local.set $p (i32.add (local.get $wj) (i32.load (i32.add (local.get $idx) (local.get $q)))))
                (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s) (v128.load offset=0 (local.get $p)))))
                (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s) (v128.load offset=16 (local.get $p)))))
                (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s) (v128.load offset=32 (local.get $p)))))
                (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s) (v128.load offset=48 (local.get $p)))))
                (local.set $a4 (f32x4.add (local.get $a4) (f32x4.mul (local.get $s) (v128.load offset=64 (local.get $p)))))
                (local.set $a5 (f32x4.add (local.get $a5) (f32x4.mul (local.get $s) (v128.load offset=80 (local.get $p)))))
                (local.set $q (i32.add (local.get $q) (i32.const 4)))
                (br $qloop2)))
            (local.set $zr (i32.add (i32.add (local.get $z) (i32.mul (local.get $r) (local.get $rb))) (local.get $jb)))
            (v128.store offset=0 (local.get $zr) (local.get $a0))
            (v128.store offset=16 (local.get $zr) (local.get $a1))
            (v128.store offset=32 (local.get $zr) (local.get $a2))
            (v128.store offset=48 (local.get $zr) (local.get $a3))
            (v128.store offset=64 (local.get $zr) (local.get $a4))
            (v128.store offset=80 (local.get $zr) (local.get $a5))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $rloop2)))
        (local.set $jb (i32.add (local.get $jb) (i32.const 96)))
        (br $wloop)))
    ;; Blocks of 16 outputs: jb is the block's byte offset within a row.
    (block $bdone
      (loop $bloop
        (br_if $bdone (i32.gt_u (i32.add (local.get $jb) (i32.const 64)) (local.get $rb)))
        (local.set $b0 (v128.load offset=0 (i32.add (local.get $bias) (local.get $jb))))
        (local.set $b1 (v128.load offset=16 (i32.add (local.get $bias) (local.get $jb))))
        (local.set $b2 (v128.load offset=32 (i32.add (local.get $bias) (local.get $jb))))
        (local.set $b3 (v128.load offset=48 (i32.add (local.get $bias) (local.get $jb))))
        (local.set $wj (i32.add (local.get $w) (local.get $jb)))
        ;; Every row, for this block.
        (local.set $r (i32.const 0))
        (block $rdone
          (loop $rloop
            (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
            ;; q0, q1 as byte offsets into idx and val.
            (local.set $q0 (i32.shl (i32.load (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))) (i32.const 2)))
            (local.set $q1 (i32.shl (i32.load offset=4 (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))) (i32.const 2)))
            (local.set $a0 (local.get $b0))
            (local.set $a1 (local.get $b1))
            (local.set $a2 (local.get $b2))
            (local.set $a3 (local.get $b3))
            ;; The row's entries, in increasing k.
            (local.set $q (local.get $q0))
            (block $qdone
              (loop $qloop
                (br_if $qdone (i32.ge_u (local.get $q) (local.get $q1)))
                (local.set $s (v128.load32_splat (i32.add (local.get $val) (local.get $q))))
                (local.set $p (i32.add (local.get $wj) (i32.load (i32.add (local.get $idx) (local.get $q)))))
                (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s) (v128.load offset=0 (local.get $p)))))
                (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s) (v128.load offset=16 (local.get $p)))))
                (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s) (v128.load offset=32 (local.get $p)))))
                (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s) (v128.load offset=48 (local.get $p)))))
                (local.set $q (i32.add (local.get $q) (i32.const 4)))
                (br $qloop)))
            (local.set $zr (i32.add (i32.add (local.get $z) (i32.mul (local.get $r) (local.get $rb))) (local.get $jb)))
            (v128.store offset=0 (local.get $zr) (local.get $a0))
            (v128.store offset=16 (local.get $zr) (local.get $a1))
            (v128.store offset=32 (local.get $zr) (local.get $a2))
            (v128.store offset=48 (local.get $zr) (local.get $a3))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $rloop)))
        (local.set $jb (i32.add (local.get $jb) (i32.const 64)))
        (br $bloop)))
    ;; The remaining outputs, 4 at a time.
    (block $cdone
      (loop $cloop
        (br_if $cdone (i32.ge_u (local.get $jb) (local.get $rb)))
        (local.set $b0 (v128.load (i32.add (local.get $bias) (local.get $jb))))
        (local.set $wj (i32.add (local.get $w) (local.get $jb)))
        ;; Every row, for these 4 outputs.
        (local.set $r (i32.const 0))
        (block $rdone1
          (loop $rloop1
            (br_if $rdone1 (i32.ge_u (local.get $r) (local.get $rows)))
            (local.set $q (i32.shl (i32.load (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))) (i32.const 2)))
            (local.set $q1 (i32.shl (i32.load offset=4 (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))) (i32.const 2)))
            (local.set $a0 (local.get $b0))
            ;; The row's entries, in increasing k.
            (block $qdone1
              (loop $qloop1
                (br_if $qdone1 (i32.ge_u (local.get $q) (local.get $q1)))
                (local.set $a0
                  (f32x4.add (local.get $a0)
                    (f32x4.mul (v128.load32_splat (i32.add (local.get $val) (local.get $q)))
                      (v128.load (i32.add (local.get $wj) (i32.load (i32.add (local.get $idx) (local.get $q))))))))
                (local.set $q (i32.add (local.get $q) (i32.const 4)))
                (br $qloop1)))
            (v128.store (i32.add (i32.add (local.get $z) (i32.mul (local.get $r) (local.get $rb))) (local.get $jb))
              (local.get $a0))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $rloop1)))
        (local.set $jb (i32.add (local.get $jb) (i32.const 16)))
        (br $cloop))))

  ;; ---------------------------------------------------------------------
  ;; dense_fwd: z[r,:] = bias + sum_{k < nK} a[r,k] * W[k,:], k increasing.
  ;; a has aP floats per row, W and z nOutP. Also the back-propagation
  ;; product (a = deltas, W = transposed weights, bias = zeros).
  ;; Rows go two at a time: each f32x4 of W loaded serves both rows, and the
  ;; eight accumulators (16 outputs of each row) are eight independent chains
  ;; of additions, twice what one row has to hide the adds' latency. Each
  ;; output's sum is the same as one row at a time, so are the bits. An odd
  ;; last row goes alone, as in sparse_fwd.
  (func (export "dense_fwd")
    (param $rows i32) (param $a i32) (param $aP i32) (param $nK i32)
    (param $w i32) (param $nOutP i32) (param $bias i32) (param $z i32)
    (local $rb i32) (local $ab i32) (local $r i32) (local $ar i32) (local $aEnd i32) (local $pa i32)
    (local $jb i32) (local $p i32) (local $zr i32)
    (local $s v128) (local $t v128) (local $w0 v128) (local $w1 v128) (local $w2 v128) (local $w3 v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128)
    (local.set $rb (i32.shl (local.get $nOutP) (i32.const 2)))
    (local.set $ab (i32.shl (local.get $aP) (i32.const 2)))
    ;; Pairs of rows r, r + 1.
    (block $pdone
      (loop $ploop
        (br_if $pdone (i32.ge_u (i32.add (local.get $r) (i32.const 1)) (local.get $rows)))
        (local.set $ar (i32.add (local.get $a) (i32.mul (local.get $r) (local.get $ab))))
        (local.set $aEnd (i32.add (local.get $ar) (i32.shl (local.get $nK) (i32.const 2))))
        (local.set $zr (i32.add (local.get $z) (i32.mul (local.get $r) (local.get $rb))))
        ;; Blocks of 16 outputs.
        (local.set $jb (i32.const 0))
        (block $bdone2
          (loop $bloop2
            (br_if $bdone2 (i32.gt_u (i32.add (local.get $jb) (i32.const 64)) (local.get $rb)))
            (local.set $a0 (v128.load offset=0 (i32.add (local.get $bias) (local.get $jb))))
            (local.set $a1 (v128.load offset=16 (i32.add (local.get $bias) (local.get $jb))))
            (local.set $a2 (v128.load offset=32 (i32.add (local.get $bias) (local.get $jb))))
            (local.set $a3 (v128.load offset=48 (i32.add (local.get $bias) (local.get $jb))))
            (local.set $c0 (local.get $a0))
            (local.set $c1 (local.get $a1))
            (local.set $c2 (local.get $a2))
            (local.set $c3 (local.get $a3))
            (local.set $pa (local.get $ar))
            (local.set $p (i32.add (local.get $w) (local.get $jb)))
            ;; k = 0 .. nK-1: a[r,k] at pa, a[r+1,k] at pa + ab.
            (block $kdone2
              (loop $kloop2
                (br_if $kdone2 (i32.ge_u (local.get $pa) (local.get $aEnd)))
                (local.set $s (v128.load32_splat (local.get $pa)))
                (local.set $t (v128.load32_splat (i32.add (local.get $pa) (local.get $ab))))
                (local.set $w0 (v128.load offset=0 (local.get $p)))
                (local.set $w1 (v128.load offset=16 (local.get $p)))
                (local.set $w2 (v128.load offset=32 (local.get $p)))
                (local.set $w3 (v128.load offset=48 (local.get $p)))
                (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s) (local.get $w0))))
                (local.set $c0 (f32x4.add (local.get $c0) (f32x4.mul (local.get $t) (local.get $w0))))
                (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s) (local.get $w1))))
                (local.set $c1 (f32x4.add (local.get $c1) (f32x4.mul (local.get $t) (local.get $w1))))
                (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s) (local.get $w2))))
                (local.set $c2 (f32x4.add (local.get $c2) (f32x4.mul (local.get $t) (local.get $w2))))
                (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s) (local.get $w3))))
                (local.set $c3 (f32x4.add (local.get $c3) (f32x4.mul (local.get $t) (local.get $w3))))
                (local.set $pa (i32.add (local.get $pa) (i32.const 4)))
                (local.set $p (i32.add (local.get $p) (local.get $rb)))
                (br $kloop2)))
            (v128.store offset=0 (i32.add (local.get $zr) (local.get $jb)) (local.get $a0))
            (v128.store offset=16 (i32.add (local.get $zr) (local.get $jb)) (local.get $a1))
            (v128.store offset=32 (i32.add (local.get $zr) (local.get $jb)) (local.get $a2))
            (v128.store offset=48 (i32.add (local.get $zr) (local.get $jb)) (local.get $a3))
            (local.set $p (i32.add (i32.add (local.get $zr) (local.get $rb)) (local.get $jb)))
            (v128.store offset=0 (local.get $p) (local.get $c0))
            (v128.store offset=16 (local.get $p) (local.get $c1))
            (v128.store offset=32 (local.get $p) (local.get $c2))
            (v128.store offset=48 (local.get $p) (local.get $c3))
            (local.set $jb (i32.add (local.get $jb) (i32.const 64)))
            (br $bloop2)))
        ;; The remaining outputs, 4 at a time.
        (block $cdone2
          (loop $cloop2
            (br_if $cdone2 (i32.ge_u (local.get $jb) (local.get $rb)))
            (local.set $a0 (v128.load (i32.add (local.get $bias) (local.get $jb))))
            (local.set $c0 (local.get $a0))
            (local.set $pa (local.get $ar))
            (local.set $p (i32.add (local.get $w) (local.get $jb)))
            ;; k = 0 .. nK-1.
            (block $kdone3
              (loop $kloop3
                (br_if $kdone3 (i32.ge_u (local.get $pa) (local.get $aEnd)))
                (local.set $w0 (v128.load (local.get $p)))
                (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (v128.load32_splat (local.get $pa)) (local.get $w0))))
                (local.set $c0
                  (f32x4.add (local.get $c0)
                    (f32x4.mul (v128.load32_splat (i32.add (local.get $pa) (local.get $ab))) (local.get $w0))))
                (local.set $pa (i32.add (local.get $pa) (i32.const 4)))
                (local.set $p (i32.add (local.get $p) (local.get $rb)))
                (br $kloop3)))
            (v128.store (i32.add (local.get $zr) (local.get $jb)) (local.get $a0))
            (v128.store (i32.add (i32.add (local.get $zr) (local.get $rb)) (local.get $jb)) (local.get $c0))
            (local.set $jb (i32.add (local.get $jb) (i32.const 16)))
            (br $cloop2)))
        (local.set $r (i32.add (local.get $r) (i32.const 2)))
        (br $ploop)))
    ;; The last row when rows is odd.
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
  ;; sparse_dw: for each row r in order and each of its sparse entries (k, x)
  ;; (idx premultiplied as for sparse_fwd), dW[k,:] += x * d[r,:]. Every
  ;; element of dW is summed over the rows in order, whatever the blocking.
  ;; As in sparse_fwd, the block of 16 outputs is the outer loop, so the
  ;; slice of dW being updated (784 × 64 bytes) stays in the L1 cache while
  ;; every row passes over it. Does not touch db (bias_dw does).
  (func (export "sparse_dw")
    (param $rows i32) (param $start i32) (param $idx i32) (param $val i32)
    (param $d i32) (param $nOutP i32) (param $dw i32)
    (local $rb i32) (local $r i32) (local $q i32) (local $q1 i32)
    (local $jb i32) (local $p i32) (local $dr i32) (local $wj i32)
    (local $s v128) (local $d0 v128) (local $d1 v128) (local $d2 v128) (local $d3 v128)
    (local.set $rb (i32.shl (local.get $nOutP) (i32.const 2)))
    ;; Blocks of 16 outputs: jb is the block's byte offset within a row.
    (block $bdone
      (loop $bloop
        (br_if $bdone (i32.gt_u (i32.add (local.get $jb) (i32.const 64)) (local.get $rb)))
        (local.set $wj (i32.add (local.get $dw) (local.get $jb)))
        ;; Every row, in order, for this block.
        (local.set $r (i32.const 0))
        (block $rdone
          (loop $rloop
            (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
            ;; q, q1 as byte offsets into idx and val.
            (local.set $q (i32.shl (i32.load (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))) (i32.const 2)))
            (local.set $q1 (i32.shl (i32.load offset=4 (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))) (i32.const 2)))
            (local.set $dr (i32.add (i32.add (local.get $d) (i32.mul (local.get $r) (local.get $rb))) (local.get $jb)))
            (local.set $d0 (v128.load offset=0 (local.get $dr)))
            (local.set $d1 (v128.load offset=16 (local.get $dr)))
            (local.set $d2 (v128.load offset=32 (local.get $dr)))
            (local.set $d3 (v128.load offset=48 (local.get $dr)))
            ;; The row's entries.
            (block $qdone
              (loop $qloop
                (br_if $qdone (i32.ge_u (local.get $q) (local.get $q1)))
                (local.set $s (v128.load32_splat (i32.add (local.get $val) (local.get $q))))
                (local.set $p (i32.add (local.get $wj) (i32.load (i32.add (local.get $idx) (local.get $q)))))
                (v128.store offset=0 (local.get $p)
                  (f32x4.add (v128.load offset=0 (local.get $p)) (f32x4.mul (local.get $s) (local.get $d0))))
                (v128.store offset=16 (local.get $p)
                  (f32x4.add (v128.load offset=16 (local.get $p)) (f32x4.mul (local.get $s) (local.get $d1))))
                (v128.store offset=32 (local.get $p)
                  (f32x4.add (v128.load offset=32 (local.get $p)) (f32x4.mul (local.get $s) (local.get $d2))))
                (v128.store offset=48 (local.get $p)
                  (f32x4.add (v128.load offset=48 (local.get $p)) (f32x4.mul (local.get $s) (local.get $d3))))
                (local.set $q (i32.add (local.get $q) (i32.const 4)))
                (br $qloop)))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $rloop)))
        (local.set $jb (i32.add (local.get $jb) (i32.const 64)))
        (br $bloop)))
    ;; The remaining outputs, 4 at a time.
    (block $cdone
      (loop $cloop
        (br_if $cdone (i32.ge_u (local.get $jb) (local.get $rb)))
        (local.set $wj (i32.add (local.get $dw) (local.get $jb)))
        ;; Every row, in order, for these 4 outputs.
        (local.set $r (i32.const 0))
        (block $rdone1
          (loop $rloop1
            (br_if $rdone1 (i32.ge_u (local.get $r) (local.get $rows)))
            (local.set $q (i32.shl (i32.load (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))) (i32.const 2)))
            (local.set $q1 (i32.shl (i32.load offset=4 (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))) (i32.const 2)))
            (local.set $d0 (v128.load (i32.add (i32.add (local.get $d) (i32.mul (local.get $r) (local.get $rb))) (local.get $jb))))
            ;; The row's entries.
            (block $qdone1
              (loop $qloop1
                (br_if $qdone1 (i32.ge_u (local.get $q) (local.get $q1)))
                (local.set $p (i32.add (local.get $wj) (i32.load (i32.add (local.get $idx) (local.get $q)))))
                (v128.store (local.get $p)
                  (f32x4.add (v128.load (local.get $p))
                    (f32x4.mul (v128.load32_splat (i32.add (local.get $val) (local.get $q))) (local.get $d0))))
                (local.set $q (i32.add (local.get $q) (i32.const 4)))
                (br $qloop1)))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $rloop1)))
        (local.set $jb (i32.add (local.get $jb) (i32.const 16)))
        (br $cloop))))

  ;; ---------------------------------------------------------------------
  ;; csc: sorts the sparse entries of `rows` rows (scan's start, pix, val) by
  ;; pixel, rows in increasing order within a pixel: pixel k's entries are
  ;; [cstart[k], cstart[k+1]) of crow (i32: the row's index times dBytes,
  ;; the byte offset of its row of deltas) and cval (f32). A counting sort:
  ;; `cursor` comes holding each pixel's count (scan counts them); prefix
  ;; sums, then place, the cursor moving along each pixel's entries.
  (func (export "csc")
    (param $rows i32) (param $start i32) (param $pix i32) (param $val i32) (param $px i32)
    (param $cursor i32) (param $cstart i32) (param $crow i32) (param $cval i32) (param $dBytes i32)
    (local $e i32) (local $p i32) (local $k i32) (local $sum i32) (local $c i32)
    (local $r i32) (local $e1 i32) (local $rowOff i32)
    ;; Prefix sums: cstart[k] = entries of pixels < k; the cursor starts there.
    (block $sdone
      (loop $sloop
        (br_if $sdone (i32.ge_u (local.get $k) (local.get $px)))
        (local.set $p (i32.shl (local.get $k) (i32.const 2)))
        (local.set $c (i32.load (i32.add (local.get $cursor) (local.get $p))))
        (i32.store (i32.add (local.get $cstart) (local.get $p)) (local.get $sum))
        (i32.store (i32.add (local.get $cursor) (local.get $p)) (local.get $sum))
        (local.set $sum (i32.add (local.get $sum) (local.get $c)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $sloop)))
    (i32.store (i32.add (local.get $cstart) (i32.shl (local.get $px) (i32.const 2))) (local.get $sum))
    ;; Place every row's entries, rows in order, at their pixel's cursor.
    (local.set $e (i32.const 0))
    (block $rdone
      (loop $rloop
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $e1 (i32.load offset=4 (i32.add (local.get $start) (i32.shl (local.get $r) (i32.const 2)))))
        (local.set $rowOff (i32.mul (local.get $r) (local.get $dBytes)))
        (block $edone
          (loop $eloop
            (br_if $edone (i32.ge_u (local.get $e) (local.get $e1)))
            (local.set $p
              (i32.add (local.get $cursor)
                (i32.shl (i32.load (i32.add (local.get $pix) (i32.shl (local.get $e) (i32.const 2)))) (i32.const 2))))
            (local.set $c (i32.shl (i32.load (local.get $p)) (i32.const 2)))
            (i32.store (local.get $p) (i32.add (i32.load (local.get $p)) (i32.const 1)))
            (i32.store (i32.add (local.get $crow) (local.get $c)) (local.get $rowOff))
            (f32.store (i32.add (local.get $cval) (local.get $c))
              (f32.load (i32.add (local.get $val) (i32.shl (local.get $e) (i32.const 2)))))
            (local.set $e (i32.add (local.get $e) (i32.const 1)))
            (br $eloop)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rloop))))

  ;; ---------------------------------------------------------------------
  ;; sparse_dw_csc: dW[k,:] += sum over pixel k's entries (row r, x), rows in
  ;; increasing order, of x * d[r,:] (the layout csc makes). The same sums in
  ;; the same order as sparse_dw, so the same bits, but each 16-column slice
  ;; of dW[k,:] is loaded and stored once per chunk and the sum runs in four
  ;; f32x4 registers, instead of a load and a store of dW per entry. Blocks
  ;; of 16 outputs are the outer loop, so the deltas' slice (rows × 64 bytes)
  ;; stays in the L1 cache. Does not touch db (bias_dw does).
  (func (export "sparse_dw_csc")
    (param $px i32) (param $cstart i32) (param $crow i32) (param $cval i32)
    (param $d i32) (param $nOutP i32) (param $dw i32)
    (local $rb i32) (local $k i32) (local $q i32) (local $q1 i32) (local $jb i32) (local $p i32) (local $dj i32)
    (local $s v128) (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $a4 v128) (local $a5 v128)
    (local.set $rb (i32.shl (local.get $nOutP) (i32.const 2)))
    ;; Blocks of 24 outputs, chosen as in sparse_fwd.
    (block $wdone
      (loop $wloop
        (local.set $p (i32.sub (local.get $rb) (local.get $jb)))
        (br_if $wdone (i32.and (i32.lt_u (local.get $p) (i32.const 160)) (i32.ne (local.get $p) (i32.const 96))))
        (local.set $dj (i32.add (local.get $d) (local.get $jb)))
        ;; Every pixel with entries, for this block.
        (local.set $k (i32.const 0))
        (block $kdone2
          (loop $kloop2
            (br_if $kdone2 (i32.ge_u (local.get $k) (local.get $px)))
            (local.set $q (i32.shl (i32.load (i32.add (local.get $cstart) (i32.shl (local.get $k) (i32.const 2)))) (i32.const 2)))
            (local.set $q1 (i32.shl (i32.load offset=4 (i32.add (local.get $cstart) (i32.shl (local.get $k) (i32.const 2)))) (i32.const 2)))
            (if (i32.lt_u (local.get $q) (local.get $q1))
              (then
                (local.set $p (i32.add (i32.add (local.get $dw) (i32.mul (local.get $k) (local.get $rb))) (local.get $jb)))
                (local.set $a0 (v128.load offset=0 (local.get $p)))
                (local.set $a1 (v128.load offset=16 (local.get $p)))
                (local.set $a2 (v128.load offset=32 (local.get $p)))
                (local.set $a3 (v128.load offset=48 (local.get $p)))
                (local.set $a4 (v128.load offset=64 (local.get $p)))
                (local.set $a5 (v128.load offset=80 (local.get $p)))
                ;; The pixel's entries, rows in increasing order.
                (loop $qloop2
                  (local.set $s (v128.load32_splat (i32.add (local.get $cval) (local.get $q))))
                  (local.set $p (i32.add (local.get $dj) (i32.load (i32.add (local.get $crow) (local.get $q)))))
                  (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s) (v128.load offset=0 (local.get $p)))))
                  (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s) (v128.load offset=16 (local.get $p)))))
                  (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s) (v128.load offset=32 (local.get $p)))))
                  (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s) (v128.load offset=48 (local.get $p)))))
                  (local.set $a4 (f32x4.add (local.get $a4) (f32x4.mul (local.get $s) (v128.load offset=64 (local.get $p)))))
                  (local.set $a5 (f32x4.add (local.get $a5) (f32x4.mul (local.get $s) (v128.load offset=80 (local.get $p)))))
                  (local.set $q (i32.add (local.get $q) (i32.const 4)))
                  (br_if $qloop2 (i32.lt_u (local.get $q) (local.get $q1))))
                (local.set $p (i32.add (i32.add (local.get $dw) (i32.mul (local.get $k) (local.get $rb))) (local.get $jb)))
                (v128.store offset=0 (local.get $p) (local.get $a0))
                (v128.store offset=16 (local.get $p) (local.get $a1))
                (v128.store offset=32 (local.get $p) (local.get $a2))
                (v128.store offset=48 (local.get $p) (local.get $a3))
                (v128.store offset=64 (local.get $p) (local.get $a4))
                (v128.store offset=80 (local.get $p) (local.get $a5))))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $kloop2)))
        (local.set $jb (i32.add (local.get $jb) (i32.const 96)))
        (br $wloop)))
    ;; Blocks of 16 outputs.
    (block $bdone
      (loop $bloop
        (br_if $bdone (i32.gt_u (i32.add (local.get $jb) (i32.const 64)) (local.get $rb)))
        (local.set $dj (i32.add (local.get $d) (local.get $jb)))
        ;; Every pixel with entries, for this block.
        (local.set $k (i32.const 0))
        (block $kdone
          (loop $kloop
            (br_if $kdone (i32.ge_u (local.get $k) (local.get $px)))
            (local.set $q (i32.shl (i32.load (i32.add (local.get $cstart) (i32.shl (local.get $k) (i32.const 2)))) (i32.const 2)))
            (local.set $q1 (i32.shl (i32.load offset=4 (i32.add (local.get $cstart) (i32.shl (local.get $k) (i32.const 2)))) (i32.const 2)))
            (if (i32.lt_u (local.get $q) (local.get $q1))
              (then
                (local.set $p (i32.add (i32.add (local.get $dw) (i32.mul (local.get $k) (local.get $rb))) (local.get $jb)))
                (local.set $a0 (v128.load offset=0 (local.get $p)))
                (local.set $a1 (v128.load offset=16 (local.get $p)))
                (local.set $a2 (v128.load offset=32 (local.get $p)))
                (local.set $a3 (v128.load offset=48 (local.get $p)))
                ;; The pixel's entries, rows in increasing order.
                (loop $qloop
                  (local.set $s (v128.load32_splat (i32.add (local.get $cval) (local.get $q))))
                  (local.set $p (i32.add (local.get $dj) (i32.load (i32.add (local.get $crow) (local.get $q)))))
                  (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s) (v128.load offset=0 (local.get $p)))))
                  (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s) (v128.load offset=16 (local.get $p)))))
                  (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s) (v128.load offset=32 (local.get $p)))))
                  (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s) (v128.load offset=48 (local.get $p)))))
                  (local.set $q (i32.add (local.get $q) (i32.const 4)))
                  (br_if $qloop (i32.lt_u (local.get $q) (local.get $q1))))
                (local.set $p (i32.add (i32.add (local.get $dw) (i32.mul (local.get $k) (local.get $rb))) (local.get $jb)))
                (v128.store offset=0 (local.get $p) (local.get $a0))
                (v128.store offset=16 (local.get $p) (local.get $a1))
                (v128.store offset=32 (local.get $p) (local.get $a2))
                (v128.store offset=48 (local.get $p) (local.get $a3))))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $kloop)))
        (local.set $jb (i32.add (local.get $jb) (i32.const 64)))
        (br $bloop)))
    ;; The remaining outputs, 4 at a time.
    (block $cdone
      (loop $cloop
        (br_if $cdone (i32.ge_u (local.get $jb) (local.get $rb)))
        (local.set $dj (i32.add (local.get $d) (local.get $jb)))
        ;; Every pixel with entries, for these 4 outputs.
        (local.set $k (i32.const 0))
        (block $kdone1
          (loop $kloop1
            (br_if $kdone1 (i32.ge_u (local.get $k) (local.get $px)))
            (local.set $q (i32.shl (i32.load (i32.add (local.get $cstart) (i32.shl (local.get $k) (i32.const 2)))) (i32.const 2)))
            (local.set $q1 (i32.shl (i32.load offset=4 (i32.add (local.get $cstart) (i32.shl (local.get $k) (i32.const 2)))) (i32.const 2)))
            (if (i32.lt_u (local.get $q) (local.get $q1))
              (then
                (local.set $p (i32.add (i32.add (local.get $dw) (i32.mul (local.get $k) (local.get $rb))) (local.get $jb)))
                (local.set $a0 (v128.load (local.get $p)))
                ;; The pixel's entries, rows in increasing order.
                (loop $qloop1
                  (local.set $a0
                    (f32x4.add (local.get $a0)
                      (f32x4.mul (v128.load32_splat (i32.add (local.get $cval) (local.get $q)))
                        (v128.load (i32.add (local.get $dj) (i32.load (i32.add (local.get $crow) (local.get $q))))))))
                  (local.set $q (i32.add (local.get $q) (i32.const 4)))
                  (br_if $qloop1 (i32.lt_u (local.get $q) (local.get $q1))))
                (v128.store (local.get $p) (local.get $a0))))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $kloop1)))
        (local.set $jb (i32.add (local.get $jb) (i32.const 16)))
        (br $cloop))))

  ;; ---------------------------------------------------------------------
  ;; bias_dw: db += d[r,:] for r = 0, 1, ... in order, 16 columns at a time
  ;; in registers, then 4 at a time (the same sums as sparse_dw's and
  ;; dense_dw's db, in the same order).
  (func (export "bias_dw") (param $rows i32) (param $d i32) (param $nOutP i32) (param $db i32)
    (local $rb i32) (local $jb i32) (local $p i32) (local $end i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local.set $rb (i32.shl (local.get $nOutP) (i32.const 2)))
    (local.set $end (i32.add (local.get $d) (i32.mul (local.get $rows) (local.get $rb))))
    ;; Blocks of 16 columns.
    (block $bdone
      (loop $bloop
        (br_if $bdone (i32.gt_u (i32.add (local.get $jb) (i32.const 64)) (local.get $rb)))
        (local.set $a0 (v128.load offset=0 (i32.add (local.get $db) (local.get $jb))))
        (local.set $a1 (v128.load offset=16 (i32.add (local.get $db) (local.get $jb))))
        (local.set $a2 (v128.load offset=32 (i32.add (local.get $db) (local.get $jb))))
        (local.set $a3 (v128.load offset=48 (i32.add (local.get $db) (local.get $jb))))
        ;; Down the rows.
        (local.set $p (i32.add (local.get $d) (local.get $jb)))
        (block $rdone
          (loop $rloop
            (br_if $rdone (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $a0 (f32x4.add (local.get $a0) (v128.load offset=0 (local.get $p))))
            (local.set $a1 (f32x4.add (local.get $a1) (v128.load offset=16 (local.get $p))))
            (local.set $a2 (f32x4.add (local.get $a2) (v128.load offset=32 (local.get $p))))
            (local.set $a3 (f32x4.add (local.get $a3) (v128.load offset=48 (local.get $p))))
            (local.set $p (i32.add (local.get $p) (local.get $rb)))
            (br $rloop)))
        (v128.store offset=0 (i32.add (local.get $db) (local.get $jb)) (local.get $a0))
        (v128.store offset=16 (i32.add (local.get $db) (local.get $jb)) (local.get $a1))
        (v128.store offset=32 (i32.add (local.get $db) (local.get $jb)) (local.get $a2))
        (v128.store offset=48 (i32.add (local.get $db) (local.get $jb)) (local.get $a3))
        (local.set $jb (i32.add (local.get $jb) (i32.const 64)))
        (br $bloop)))
    ;; The remaining columns, 4 at a time.
    (block $cdone
      (loop $cloop
        (br_if $cdone (i32.ge_u (local.get $jb) (local.get $rb)))
        (local.set $a0 (v128.load (i32.add (local.get $db) (local.get $jb))))
        ;; Down the rows.
        (local.set $p (i32.add (local.get $d) (local.get $jb)))
        (block $rdone1
          (loop $rloop1
            (br_if $rdone1 (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $a0 (f32x4.add (local.get $a0) (v128.load (local.get $p))))
            (local.set $p (i32.add (local.get $p) (local.get $rb)))
            (br $rloop1)))
        (v128.store (i32.add (local.get $db) (local.get $jb)) (local.get $a0))
        (local.set $jb (i32.add (local.get $jb) (i32.const 16)))
        (br $cloop))))

    ;; ---------------------------------------------------------------------
;; dense_dw: dW[k,:] += sum over rows r in order of a[r,k] * d[r,:], for
  ;; k < nK; a has aP floats per row, d and dW nOutP. Two values of k at a
  ;; time down all the rows, 16 outputs each in eight f32x4 accumulators (as
  ;; dense_fwd's two rows), so dW is loaded and stored once per chunk instead
  ;; of once per row. Blocks of outputs are the outer loop: the deltas' slice
  ;; and the lines of a in use fit in the L1 cache.
  ;; Zero activations are NOT skipped, unlike the reference kernel: with
  ;; every delta finite, adding a[r,k] * d = ±0 to a sum that started at +0
  ;; changes no bit (such a sum is never -0), so the result is dense_dw_skip's
  ;; exactly. The caller checks the deltas (all_finite) and takes
  ;; dense_dw_skip otherwise, where 0 · ∞ would give a NaN the skip avoids.
  ;; Does not touch db (bias_dw does).
  (func (export "dense_dw")
    (param $rows i32) (param $a i32) (param $aP i32) (param $nK i32)
    (param $d i32) (param $nOutP i32) (param $dw i32)
    (local $rb i32) (local $ab i32) (local $k i32) (local $pa i32) (local $pd i32) (local $pw i32)
    (local $aEnd i32) (local $jb i32) (local $kEven i32)
    (local $s v128) (local $t v128) (local $d0 v128) (local $d1 v128) (local $d2 v128) (local $d3 v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128)
    (local.set $rb (i32.shl (local.get $nOutP) (i32.const 2)))
    (local.set $ab (i32.shl (local.get $aP) (i32.const 2)))
    (local.set $aEnd (i32.add (local.get $a) (i32.mul (local.get $rows) (local.get $ab))))
    (local.set $kEven (i32.and (local.get $nK) (i32.const -2)))
    ;; Blocks of 16 outputs.
    (block $bdone
      (loop $bloop
        (br_if $bdone (i32.gt_u (i32.add (local.get $jb) (i32.const 64)) (local.get $rb)))
        ;; Pairs k, k + 1 (then a last odd k alone, with the second sum discarded).
        (local.set $k (i32.const 0))
        (block $kdone
          (loop $kloop
            (br_if $kdone (i32.ge_u (local.get $k) (local.get $nK)))
            (local.set $pw (i32.add (i32.add (local.get $dw) (i32.mul (local.get $k) (local.get $rb))) (local.get $jb)))
            (local.set $a0 (v128.load offset=0 (local.get $pw)))
            (local.set $a1 (v128.load offset=16 (local.get $pw)))
            (local.set $a2 (v128.load offset=32 (local.get $pw)))
            (local.set $a3 (v128.load offset=48 (local.get $pw)))
            (local.set $c0 (v128.const i32x4 0 0 0 0))
            (local.set $c1 (v128.const i32x4 0 0 0 0))
            (local.set $c2 (v128.const i32x4 0 0 0 0))
            (local.set $c3 (v128.const i32x4 0 0 0 0))
            (if (i32.lt_u (local.get $k) (local.get $kEven))
              (then
                (local.set $c0 (v128.load offset=0 (i32.add (local.get $pw) (local.get $rb))))
                (local.set $c1 (v128.load offset=16 (i32.add (local.get $pw) (local.get $rb))))
                (local.set $c2 (v128.load offset=32 (i32.add (local.get $pw) (local.get $rb))))
                (local.set $c3 (v128.load offset=48 (i32.add (local.get $pw) (local.get $rb))))))
            (local.set $pa (i32.add (local.get $a) (i32.shl (local.get $k) (i32.const 2))))
            (local.set $pd (i32.add (local.get $d) (local.get $jb)))
            ;; Down the rows: a[r,k] at pa, a[r,k+1] next to it, d[r,jb..] at pd.
            ;; (For an odd last k, a[r,k+1] is the row's padding or the next
            ;; row's first value: read, never stored.)
            (block $rdone
              (loop $rloop
                (br_if $rdone (i32.ge_u (local.get $pa) (local.get $aEnd)))
                (local.set $s (v128.load32_splat (local.get $pa)))
                (local.set $t (v128.load32_splat offset=4 (local.get $pa)))
                (local.set $d0 (v128.load offset=0 (local.get $pd)))
                (local.set $d1 (v128.load offset=16 (local.get $pd)))
                (local.set $d2 (v128.load offset=32 (local.get $pd)))
                (local.set $d3 (v128.load offset=48 (local.get $pd)))
                (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s) (local.get $d0))))
                (local.set $c0 (f32x4.add (local.get $c0) (f32x4.mul (local.get $t) (local.get $d0))))
                (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s) (local.get $d1))))
                (local.set $c1 (f32x4.add (local.get $c1) (f32x4.mul (local.get $t) (local.get $d1))))
                (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s) (local.get $d2))))
                (local.set $c2 (f32x4.add (local.get $c2) (f32x4.mul (local.get $t) (local.get $d2))))
                (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s) (local.get $d3))))
                (local.set $c3 (f32x4.add (local.get $c3) (f32x4.mul (local.get $t) (local.get $d3))))
                (local.set $pa (i32.add (local.get $pa) (local.get $ab)))
                (local.set $pd (i32.add (local.get $pd) (local.get $rb)))
                (br $rloop)))
            (v128.store offset=0 (local.get $pw) (local.get $a0))
            (v128.store offset=16 (local.get $pw) (local.get $a1))
            (v128.store offset=32 (local.get $pw) (local.get $a2))
            (v128.store offset=48 (local.get $pw) (local.get $a3))
            (if (i32.lt_u (local.get $k) (local.get $kEven))
              (then
                (v128.store offset=0 (i32.add (local.get $pw) (local.get $rb)) (local.get $c0))
                (v128.store offset=16 (i32.add (local.get $pw) (local.get $rb)) (local.get $c1))
                (v128.store offset=32 (i32.add (local.get $pw) (local.get $rb)) (local.get $c2))
                (v128.store offset=48 (i32.add (local.get $pw) (local.get $rb)) (local.get $c3))))
            (local.set $k (i32.add (local.get $k) (i32.const 2)))
            (br $kloop)))
        (local.set $jb (i32.add (local.get $jb) (i32.const 64)))
        (br $bloop)))
    ;; The remaining outputs, 4 at a time; k one at a time.
    (block $cdone
      (loop $cloop
        (br_if $cdone (i32.ge_u (local.get $jb) (local.get $rb)))
        (local.set $k (i32.const 0))
        (block $kdone1
          (loop $kloop1
            (br_if $kdone1 (i32.ge_u (local.get $k) (local.get $nK)))
            (local.set $pw (i32.add (i32.add (local.get $dw) (i32.mul (local.get $k) (local.get $rb))) (local.get $jb)))
            (local.set $a0 (v128.load (local.get $pw)))
            (local.set $pa (i32.add (local.get $a) (i32.shl (local.get $k) (i32.const 2))))
            (local.set $pd (i32.add (local.get $d) (local.get $jb)))
            ;; Down the rows.
            (block $rdone1
              (loop $rloop1
                (br_if $rdone1 (i32.ge_u (local.get $pa) (local.get $aEnd)))
                (local.set $a0
                  (f32x4.add (local.get $a0) (f32x4.mul (v128.load32_splat (local.get $pa)) (v128.load (local.get $pd)))))
                (local.set $pa (i32.add (local.get $pa) (local.get $ab)))
                (local.set $pd (i32.add (local.get $pd) (local.get $rb)))
                (br $rloop1)))
            (v128.store (local.get $pw) (local.get $a0))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $kloop1)))
        (local.set $jb (i32.add (local.get $jb) (i32.const 16)))
        (br $cloop))))

  ;; ---------------------------------------------------------------------
  ;; all_finite: 1 if none of the n floats at p (n a multiple of 4) is
  ;; infinite or NaN, else 0. (|x| < ∞ is false for both.)
  (func (export "all_finite") (param $p i32) (param $n i32) (result i32)
    (local $end i32) (local $ok v128) (local $inf v128)
    (local.set $inf (v128.const f32x4 inf inf inf inf))
    (local.set $ok (v128.const i32x4 -1 -1 -1 -1))
    (local.set $end (i32.add (local.get $p) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $ok (v128.and (local.get $ok) (f32x4.lt (f32x4.abs (v128.load (local.get $p))) (local.get $inf))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $loop)))
    (i32x4.all_true (local.get $ok)))

  ;; ---------------------------------------------------------------------
  ;; dense_dw_skip: for each row r in order, db += d[r,:] and, for k < nK
  ;; with a[r,k] != 0 (as the reference kernel, which skips zero
  ;; activations), dW[k,:] += a[r,k] * d[r,:]. For deltas that are not all
  ;; finite (see dense_dw).
  (func (export "dense_dw_skip")
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
  ;; The constants live in a 224-byte table in memory (sigmoid_consts writes
  ;; it; `consts` is its address) rather than in v128.const: the engine
  ;; rebuilds a v128.const from immediates at every use, three instructions
  ;; each, which made up half of the loop; a table value sits in a register
  ;; or costs one load.
  (func (export "sigmoid_consts") (param $at i32)
    (v128.store offset=0 (local.get $at) (v128.const f32x4 88.7 88.7 88.7 88.7))
    (v128.store offset=16 (local.get $at) (v128.const f32x4 -87 -87 -87 -87))
    (v128.store offset=32 (local.get $at)
      (v128.const f32x4 1.44269504088896341 1.44269504088896341 1.44269504088896341 1.44269504088896341))
    (v128.store offset=48 (local.get $at) (v128.const f32x4 12582912 12582912 12582912 12582912))
    (v128.store offset=64 (local.get $at) (v128.const f32x4 0.693359375 0.693359375 0.693359375 0.693359375))
    (v128.store offset=80 (local.get $at) (v128.const f32x4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4))
    (v128.store offset=96 (local.get $at) (v128.const f32x4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4))
    (v128.store offset=112 (local.get $at) (v128.const f32x4 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3))
    (v128.store offset=128 (local.get $at) (v128.const f32x4 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3))
    (v128.store offset=144 (local.get $at) (v128.const f32x4 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2))
    (v128.store offset=160 (local.get $at) (v128.const f32x4 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1))
    (v128.store offset=176 (local.get $at) (v128.const f32x4 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1))
    (v128.store offset=192 (local.get $at) (v128.const f32x4 1 1 1 1))
    ;; bits(magic + n) = 0x4B400000 + n; 2^n has bits (n + 127) << 23.
    (v128.store offset=208 (local.get $at) (v128.const i32x4 -1262485377 -1262485377 -1262485377 -1262485377)))

  (func (export "sigmoid") (param $dst i32) (param $src i32) (param $n i32) (param $consts i32)
    (local $i i32) (local $end i32) (local $t v128) (local $y v128) (local $fx v128) (local $r v128) (local $p v128)
    (local $hi v128) (local $lo v128) (local $log2e v128) (local $magic v128) (local $ln2hi v128) (local $ln2lo v128)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128) (local $c4 v128) (local $c5 v128)
    (local $one v128) (local $bias v128)
    (local.set $hi (v128.load offset=0 (local.get $consts)))
    (local.set $lo (v128.load offset=16 (local.get $consts)))
    (local.set $log2e (v128.load offset=32 (local.get $consts)))
    (local.set $magic (v128.load offset=48 (local.get $consts)))
    (local.set $ln2hi (v128.load offset=64 (local.get $consts)))
    (local.set $ln2lo (v128.load offset=80 (local.get $consts)))
    (local.set $c0 (v128.load offset=96 (local.get $consts)))
    (local.set $c1 (v128.load offset=112 (local.get $consts)))
    (local.set $c2 (v128.load offset=128 (local.get $consts)))
    (local.set $c3 (v128.load offset=144 (local.get $consts)))
    (local.set $c4 (v128.load offset=160 (local.get $consts)))
    (local.set $c5 (v128.load offset=176 (local.get $consts)))
    (local.set $one (v128.load offset=192 (local.get $consts)))
    (local.set $bias (v128.load offset=208 (local.get $consts)))
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

  ;; add_f64: dst (f64) += src (f32), n values (n even), and src = 0: a
  ;; chunk's float32 sums folded into the shard's float64 total, leaving the
  ;; chunk's sums zeroed for the next chunk in the same pass.
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
        (i64.store (i32.add (local.get $src) (local.get $i)) (i64.const 0))
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

  ;; add_f32: dst = a + b (float32, correctly rounded), n values (n a
  ;; multiple of 4); dst may be a. The shard tree's node sums, inside the
  ;; kernel's memory (see F32Heap in f32-heap.ts).
  (func (export "add_f32") (param $dst i32) (param $a i32) (param $b i32) (param $n i32)
    (local $i i32) (local $end i32)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (v128.store (i32.add (local.get $dst) (local.get $i))
          (f32x4.add (v128.load (i32.add (local.get $a) (local.get $i)))
            (v128.load (i32.add (local.get $b) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $loop))))

  ;; ---------------------------------------------------------------------
  ;; The optimizers' updates (optimizer.ts, applyUpdate), fused with the
  ;; mean gradient: g = sum[p] / count (+ wd·param), in float64 with the
  ;; operations of the JavaScript in the same order (wasm has no fused
  ;; multiply-add and rounds each operation to nearest, as JavaScript does),
  ;; so the bits are those of meanGradient + applyUpdate. Two values a
  ;; pass in f64x2, the last odd one alone. Pointers to float32 arrays of n.

  ;; sgd: param -= lr · (g + wd · param)
  (func (export "sgd") (param $x i32) (param $sum i32) (param $n i32)
    (param $count f64) (param $lr f64) (param $wd f64)
    (local $i i32) (local $pairs i32) (local $xv v128) (local $g v128)
    (local $xs f64)
    (local.set $pairs (i32.and (local.get $n) (i32.const -2)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $pairs)))
        (local.set $xv (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2))))))
        (local.set $g (f64x2.div (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $sum) (i32.shl (local.get $i) (i32.const 2)))))
          (f64x2.splat (local.get $count))))
        (v128.store64_lane 0 (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2)))
          (f32x4.demote_f64x2_zero
            (f64x2.sub (local.get $xv)
              (f64x2.mul (f64x2.splat (local.get $lr))
                (f64x2.add (local.get $g) (f64x2.mul (f64x2.splat (local.get $wd)) (local.get $xv)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 2)))
        (br $loop)))
    (if (i32.lt_u (local.get $pairs) (local.get $n))
      (then
        (local.set $xs (f64.promote_f32 (f32.load (i32.add (local.get $x) (i32.shl (local.get $pairs) (i32.const 2))))))
        (f32.store (i32.add (local.get $x) (i32.shl (local.get $pairs) (i32.const 2)))
          (f32.demote_f64
            (f64.sub (local.get $xs)
              (f64.mul (local.get $lr)
                (f64.add
                  (f64.div (f64.promote_f32 (f32.load (i32.add (local.get $sum) (i32.shl (local.get $pairs) (i32.const 2))))) (local.get $count))
                  (f64.mul (local.get $wd) (local.get $xs))))))))))

  ;; momentum: v = mu · state + (g + wd · param); state = v; param -= lr · v
  ;; (v unrounded in the parameter's update, as in JavaScript)
  (func (export "momentum") (param $x i32) (param $st i32) (param $sum i32) (param $n i32)
    (param $count f64) (param $lr f64) (param $wd f64) (param $mu f64)
    (local $i i32) (local $pairs i32) (local $o i32) (local $xv v128) (local $v v128)
    (local $xs f64) (local $vs f64)
    (local.set $pairs (i32.and (local.get $n) (i32.const -2)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $pairs)))
        (local.set $o (i32.shl (local.get $i) (i32.const 2)))
        (local.set $xv (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $x) (local.get $o)))))
        (local.set $v
          (f64x2.add
            (f64x2.mul (f64x2.splat (local.get $mu)) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $st) (local.get $o)))))
            (f64x2.add
              (f64x2.div (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $sum) (local.get $o)))) (f64x2.splat (local.get $count)))
              (f64x2.mul (f64x2.splat (local.get $wd)) (local.get $xv)))))
        (v128.store64_lane 0 (i32.add (local.get $st) (local.get $o)) (f32x4.demote_f64x2_zero (local.get $v)))
        (v128.store64_lane 0 (i32.add (local.get $x) (local.get $o))
          (f32x4.demote_f64x2_zero (f64x2.sub (local.get $xv) (f64x2.mul (f64x2.splat (local.get $lr)) (local.get $v)))))
        (local.set $i (i32.add (local.get $i) (i32.const 2)))
        (br $loop)))
    (if (i32.lt_u (local.get $pairs) (local.get $n))
      (then
        (local.set $o (i32.shl (local.get $pairs) (i32.const 2)))
        (local.set $xs (f64.promote_f32 (f32.load (i32.add (local.get $x) (local.get $o)))))
        (local.set $vs
          (f64.add
            (f64.mul (local.get $mu) (f64.promote_f32 (f32.load (i32.add (local.get $st) (local.get $o)))))
            (f64.add
              (f64.div (f64.promote_f32 (f32.load (i32.add (local.get $sum) (local.get $o)))) (local.get $count))
              (f64.mul (local.get $wd) (local.get $xs)))))
        (f32.store (i32.add (local.get $st) (local.get $o)) (f32.demote_f64 (local.get $vs)))
        (f32.store (i32.add (local.get $x) (local.get $o))
          (f32.demote_f64 (f64.sub (local.get $xs) (f64.mul (local.get $lr) (local.get $vs))))))))

  ;; adam: g = mean + wd · param; m = b1 · m + (1 - b1) · g;
  ;; v = b2 · v + ((1 - b2) · g) · g; param -= (lr · (m / c1)) / (sqrt(v / c2) + eps)
  ;; (m and v unrounded in the parameter's update; m at $st, v at $st + 4n)
  (func (export "adam") (param $x i32) (param $st i32) (param $sum i32) (param $n i32)
    (param $count f64) (param $lr f64) (param $wd f64)
    (param $b1 f64) (param $a1 f64) (param $b2 f64) (param $a2 f64) (param $c1 f64) (param $c2 f64) (param $eps f64)
    (local $i i32) (local $pairs i32) (local $o i32) (local $sv i32)
    (local $xv v128) (local $g v128) (local $m v128) (local $v v128)
    (local $xs f64) (local $gs f64) (local $ms f64) (local $vs f64)
    (local.set $pairs (i32.and (local.get $n) (i32.const -2)))
    (local.set $sv (i32.add (local.get $st) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $pairs)))
        (local.set $o (i32.shl (local.get $i) (i32.const 2)))
        (local.set $xv (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $x) (local.get $o)))))
        (local.set $g
          (f64x2.add
            (f64x2.div (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $sum) (local.get $o)))) (f64x2.splat (local.get $count)))
            (f64x2.mul (f64x2.splat (local.get $wd)) (local.get $xv))))
        (local.set $m
          (f64x2.add
            (f64x2.mul (f64x2.splat (local.get $b1)) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $st) (local.get $o)))))
            (f64x2.mul (f64x2.splat (local.get $a1)) (local.get $g))))
        (local.set $v
          (f64x2.add
            (f64x2.mul (f64x2.splat (local.get $b2)) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $sv) (local.get $o)))))
            (f64x2.mul (f64x2.mul (f64x2.splat (local.get $a2)) (local.get $g)) (local.get $g))))
        (v128.store64_lane 0 (i32.add (local.get $st) (local.get $o)) (f32x4.demote_f64x2_zero (local.get $m)))
        (v128.store64_lane 0 (i32.add (local.get $sv) (local.get $o)) (f32x4.demote_f64x2_zero (local.get $v)))
        (v128.store64_lane 0 (i32.add (local.get $x) (local.get $o))
          (f32x4.demote_f64x2_zero
            (f64x2.sub (local.get $xv)
              (f64x2.div
                (f64x2.mul (f64x2.splat (local.get $lr)) (f64x2.div (local.get $m) (f64x2.splat (local.get $c1))))
                (f64x2.add (f64x2.sqrt (f64x2.div (local.get $v) (f64x2.splat (local.get $c2)))) (f64x2.splat (local.get $eps)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 2)))
        (br $loop)))
    (if (i32.lt_u (local.get $pairs) (local.get $n))
      (then
        (local.set $o (i32.shl (local.get $pairs) (i32.const 2)))
        (local.set $xs (f64.promote_f32 (f32.load (i32.add (local.get $x) (local.get $o)))))
        (local.set $gs
          (f64.add
            (f64.div (f64.promote_f32 (f32.load (i32.add (local.get $sum) (local.get $o)))) (local.get $count))
            (f64.mul (local.get $wd) (local.get $xs))))
        (local.set $ms
          (f64.add (f64.mul (local.get $b1) (f64.promote_f32 (f32.load (i32.add (local.get $st) (local.get $o)))))
            (f64.mul (local.get $a1) (local.get $gs))))
        (local.set $vs
          (f64.add (f64.mul (local.get $b2) (f64.promote_f32 (f32.load (i32.add (local.get $sv) (local.get $o)))))
            (f64.mul (f64.mul (local.get $a2) (local.get $gs)) (local.get $gs))))
        (f32.store (i32.add (local.get $st) (local.get $o)) (f32.demote_f64 (local.get $ms)))
        (f32.store (i32.add (local.get $sv) (local.get $o)) (f32.demote_f64 (local.get $vs)))
        (f32.store (i32.add (local.get $x) (local.get $o))
          (f32.demote_f64
            (f64.sub (local.get $xs)
              (f64.div (f64.mul (local.get $lr) (f64.div (local.get $ms) (local.get $c1)))
                (f64.add (f64.sqrt (f64.div (local.get $vs) (local.get $c2))) (local.get $eps)))))))))
)
