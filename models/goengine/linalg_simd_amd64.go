//go:build goexperiment.simd && amd64

package goengine

import "simd/archsimd"

// The float kernel in AVX2 with FMA (GOEXPERIMENT=simd builds on amd64),
// over the same packed panels as the pure-Go one: one Float32x8 is one
// panel's row. Dense, a 4×16 block of C (four rows of A against two
// panels) stays in eight vector accumulators while k runs, each step
// loading two panel vectors and broadcasting four values of A into eight
// FMAs; 6×16 would need all 15 vector registers Go allocates. Sparse, one
// row's gathered non-zeros run against four panels at once, two non-zeros
// per step into eight accumulators. FMA rounds each multiply-add once, so
// results differ from the pure-Go kernel in the last bits.

func init() {
	if archsimd.X86.AVX2() && archsimd.X86.FMA() {
		// Dense FMAs reuse each loaded panel vector four times and sparse
		// ones not at all, so the sparse kernel pays only from a larger
		// share of zeros than in pure Go.
		kernels = append(kernels, kernel{name: "avx2", dense: sgemmAVX2, sparse: sgemmSparseAVX2, sparseAt: 5})
		kern = kernels[len(kernels)-1]
		qsums16, qsums16x4 = qsums16AVX2, qsums16x4AVX2
	}
}

// qsums16AVX2 is qsums16 with VPMADDWD: each activation pair, broadcast to
// eight int32s (sixteen int16s), meets one panel row of eight columns'
// weight pairs and adds eight pair sums. Four panels run at once, so each
// broadcast feeds four multiplies.
func qsums16AVX2(acc []int32, pv, pi []int32, w16 []int16, kp, panels int) {
	const row = 2 * q16Panel
	stride := kp * row
	pn := 0
	for ; pn+4 <= panels; pn += 4 {
		w0, w1, w2, w3 := w16[pn*stride:(pn+1)*stride], w16[(pn+1)*stride:(pn+2)*stride], w16[(pn+2)*stride:(pn+3)*stride], w16[(pn+3)*stride:(pn+4)*stride]
		var s0, s1, s2, s3 archsimd.Int32x8
		for i, v := range pv {
			o := int(pi[i]) * row
			x := archsimd.BroadcastInt32x8(v).AsInt16x16()
			s0 = s0.Add(archsimd.LoadInt16x16((*[row]int16)(w0[o:])).DotProductPairs(x))
			s1 = s1.Add(archsimd.LoadInt16x16((*[row]int16)(w1[o:])).DotProductPairs(x))
			s2 = s2.Add(archsimd.LoadInt16x16((*[row]int16)(w2[o:])).DotProductPairs(x))
			s3 = s3.Add(archsimd.LoadInt16x16((*[row]int16)(w3[o:])).DotProductPairs(x))
		}
		s0.Store((*[q16Panel]int32)(acc[pn*q16Panel:]))
		s1.Store((*[q16Panel]int32)(acc[(pn+1)*q16Panel:]))
		s2.Store((*[q16Panel]int32)(acc[(pn+2)*q16Panel:]))
		s3.Store((*[q16Panel]int32)(acc[(pn+3)*q16Panel:]))
	}
	for ; pn < panels; pn++ {
		w0 := w16[pn*stride : (pn+1)*stride]
		var s0 archsimd.Int32x8
		for i, v := range pv {
			o := int(pi[i]) * row
			s0 = s0.Add(archsimd.LoadInt16x16((*[row]int16)(w0[o:])).DotProductPairs(archsimd.BroadcastInt32x8(v).AsInt16x16()))
		}
		s0.Store((*[q16Panel]int32)(acc[pn*q16Panel:]))
	}
	archsimd.ClearAVXUpperBits()
}

// nBlock bounds the columns one pass over a k block covers, so that their
// panels (kBlock·nBlock floats, 128 KiB) stay in L2 while every row of A
// meets them.
const nBlock = 16 * panelW

// sgemmAVX2 is sgemm with FMA. Each quad of rows of a k block is copied
// interleaved ([p][4]) so the micro-kernel walks one stream of A.
func sgemmAVX2(c []float32, ldc int, a []float32, m, k int, bp []float32, n int, alpha float32) {
	var quad [4 * kBlock]float32
	al := archsimd.BroadcastFloat32x8(alpha)
	for k0 := 0; k0 < k; k0 += kBlock {
		kc := min(kBlock, k-k0)
		for n0 := 0; n0 < n; n0 += nBlock {
			n1 := min(n0+nBlock, n)
			i := 0
			for ; i+4 <= m; i += 4 {
				q := quad[:4*kc]
				for r := range 4 {
					for p, v := range a[(i+r)*k+k0 : (i+r)*k+k0+kc] {
						q[4*p+r] = v
					}
				}
				j0 := n0
				for ; j0+2*panelW <= n1 || j0+panelW < n1; j0 += 2 * panelW {
					block4x16(c[i*ldc+j0:], ldc, q, bp[j0*k+k0*panelW:j0*k+(k0+kc)*panelW], bp[(j0+panelW)*k+k0*panelW:(j0+panelW)*k+(k0+kc)*panelW], min(2*panelW, n1-j0), al)
				}
				if j0 < n1 {
					block4x8(c[i*ldc+j0:], ldc, q, bp[j0*k+k0*panelW:j0*k+(k0+kc)*panelW], n1-j0, al)
				}
			}
			for ; i < m; i++ {
				ar := a[i*k+k0 : i*k+k0+kc]
				for j0 := n0; j0 < n1; j0 += 2 * panelW {
					p0 := bp[j0*k+k0*panelW : j0*k+(k0+kc)*panelW]
					p1 := zeroPanel[:kc*panelW]
					if j0+panelW < n1 {
						p1 = bp[(j0+panelW)*k+k0*panelW : (j0+panelW)*k+(k0+kc)*panelW]
					}
					row1x16(c[i*ldc+j0:i*ldc+min(j0+2*panelW, n1)], ar, p0, p1, al)
				}
			}
		}
	}
	archsimd.ClearAVXUpperBits()
}

// zeroPanel stands in for the missing second panel of an odd count.
var zeroPanel [kBlock * panelW]float32

// block4x16 adds al·A·[p0 p1] to the first w (≤ 16) columns of rows 0-3
// of c (stride ldc), A being q, four rows interleaved.
func block4x16(c []float32, ldc int, q, p0, p1 []float32, w int, al archsimd.Float32x8) {
	var c00, c01, c10, c11, c20, c21, c30, c31 archsimd.Float32x8
	for len(q) >= 4 && len(p0) >= panelW && len(p1) >= panelW {
		b0 := archsimd.LoadFloat32x8((*[panelW]float32)(p0))
		b1 := archsimd.LoadFloat32x8((*[panelW]float32)(p1))
		x := q[:4:4]
		v := archsimd.BroadcastFloat32x8(x[0])
		c00 = v.MulAdd(b0, c00)
		c01 = v.MulAdd(b1, c01)
		v = archsimd.BroadcastFloat32x8(x[1])
		c10 = v.MulAdd(b0, c10)
		c11 = v.MulAdd(b1, c11)
		v = archsimd.BroadcastFloat32x8(x[2])
		c20 = v.MulAdd(b0, c20)
		c21 = v.MulAdd(b1, c21)
		v = archsimd.BroadcastFloat32x8(x[3])
		c30 = v.MulAdd(b0, c30)
		c31 = v.MulAdd(b1, c31)
		q, p0, p1 = q[4:], p0[panelW:], p1[panelW:]
	}
	update16(c[:w], c00, c01, al)
	update16(c[ldc:ldc+w], c10, c11, al)
	update16(c[2*ldc:2*ldc+w], c20, c21, al)
	update16(c[3*ldc:3*ldc+w], c30, c31, al)
}

// block4x8 is block4x16 for one panel, w ≤ 8.
func block4x8(c []float32, ldc int, q, p0 []float32, w int, al archsimd.Float32x8) {
	var c0, c1, c2, c3 archsimd.Float32x8
	for len(q) >= 4 && len(p0) >= panelW {
		b0 := archsimd.LoadFloat32x8((*[panelW]float32)(p0))
		x := q[:4:4]
		c0 = archsimd.BroadcastFloat32x8(x[0]).MulAdd(b0, c0)
		c1 = archsimd.BroadcastFloat32x8(x[1]).MulAdd(b0, c1)
		c2 = archsimd.BroadcastFloat32x8(x[2]).MulAdd(b0, c2)
		c3 = archsimd.BroadcastFloat32x8(x[3]).MulAdd(b0, c3)
		q, p0 = q[4:], p0[panelW:]
	}
	for r, v := range [4]archsimd.Float32x8{c0, c1, c2, c3} {
		d := c[r*ldc : r*ldc+w]
		v.MulAdd(al, archsimd.LoadFloat32x8SlicePart(d)).StoreSlicePart(d)
	}
}

// row1x16 adds al·a·[p0 p1] to the len(c) ≤ 16 values of c, k unrolled
// by two into four accumulators.
func row1x16(c, a, p0, p1 []float32, al archsimd.Float32x8) {
	kc := len(a)
	p0, p1 = p0[:kc*panelW], p1[:kc*panelW]
	var c0, c1, d0, d1 archsimd.Float32x8
	p := 0
	for ; p+2 <= kc; p += 2 {
		x := archsimd.BroadcastFloat32x8(a[p])
		y := archsimd.BroadcastFloat32x8(a[p+1])
		c0 = x.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(p0[p*panelW:])), c0)
		c1 = x.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(p1[p*panelW:])), c1)
		d0 = y.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(p0[(p+1)*panelW:])), d0)
		d1 = y.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(p1[(p+1)*panelW:])), d1)
	}
	if p < kc {
		x := archsimd.BroadcastFloat32x8(a[p])
		c0 = x.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(p0[p*panelW:])), c0)
		c1 = x.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(p1[p*panelW:])), c1)
	}
	update16(c, c0.Add(d0), c1.Add(d1), al)
}

// update16 adds al·[v0 v1] to the len(c) ≤ 16 values of c.
func update16(c []float32, v0, v1, al archsimd.Float32x8) {
	if len(c) >= 2*panelW {
		v0.MulAdd(al, archsimd.LoadFloat32x8Slice(c)).StoreSlice(c)
		v1.MulAdd(al, archsimd.LoadFloat32x8Slice(c[panelW:])).StoreSlice(c[panelW:])
		return
	}
	lo := c[:min(len(c), panelW)]
	v0.MulAdd(al, archsimd.LoadFloat32x8SlicePart(lo)).StoreSlicePart(lo)
	if len(c) > panelW {
		hi := c[panelW:]
		v1.MulAdd(al, archsimd.LoadFloat32x8SlicePart(hi)).StoreSlicePart(hi)
	}
}

// sgemmSparseAVX2 is sgemmSparse with FMA.
func sgemmSparseAVX2(c []float32, ldc int, a []float32, m, k int, bp []float32, n int, alpha float32, vals []float32, idx, offs []int32) {
	t := 0
	for i := 0; i < m; i++ {
		offs[i] = int32(t)
		for p, v := range a[i*k : (i+1)*k] {
			if v != 0 {
				vals[t], idx[t] = v, int32(p*panelW)
				t++
			}
		}
	}
	offs[m] = int32(t)
	al := archsimd.BroadcastFloat32x8(alpha)
	pl := k * panelW // one panel's length
	for i := 0; i < m; i++ {
		lo, hi := offs[i], offs[i+1]
		v, x := vals[lo:hi], idx[lo:hi]
		j0 := 0
		for ; j0+4*panelW <= n; j0 += 4 * panelW {
			gather4(c[i*ldc+j0:i*ldc+j0+4*panelW], v, x, bp[j0*k:(j0+4*panelW)*k], pl, al)
		}
		for ; j0 < n; j0 += panelW {
			gather1(c[i*ldc+j0:i*ldc+min(j0+panelW, n)], v, x, bp[j0*k:(j0+panelW)*k], al)
		}
	}
	archsimd.ClearAVXUpperBits()
}

// gather4 adds al·Σ vals[t]·(row idx[t] of each of four panels) to the 32
// values of c; panels holds the four, pl values each.
func gather4(c, vals []float32, idx []int32, panels []float32, pl int, al archsimd.Float32x8) {
	q0 := panels[:pl]
	q1 := panels[pl : 2*pl]
	q2 := panels[2*pl : 3*pl]
	q3 := panels[3*pl : 4*pl]
	idx = idx[:len(vals)]
	var c0, c1, c2, c3, d0, d1, d2, d3 archsimd.Float32x8
	t := 0
	for ; t+2 <= len(vals); t += 2 {
		o, r := int(idx[t]), int(idx[t+1])
		x := archsimd.BroadcastFloat32x8(vals[t])
		y := archsimd.BroadcastFloat32x8(vals[t+1])
		c0 = x.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(q0[o:])), c0)
		c1 = x.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(q1[o:])), c1)
		c2 = x.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(q2[o:])), c2)
		c3 = x.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(q3[o:])), c3)
		d0 = y.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(q0[r:])), d0)
		d1 = y.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(q1[r:])), d1)
		d2 = y.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(q2[r:])), d2)
		d3 = y.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(q3[r:])), d3)
	}
	if t < len(vals) {
		o := int(idx[t])
		x := archsimd.BroadcastFloat32x8(vals[t])
		c0 = x.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(q0[o:])), c0)
		c1 = x.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(q1[o:])), c1)
		c2 = x.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(q2[o:])), c2)
		c3 = x.MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(q3[o:])), c3)
	}
	c = c[:4*panelW]
	c0.Add(d0).MulAdd(al, archsimd.LoadFloat32x8Slice(c)).StoreSlice(c)
	c1.Add(d1).MulAdd(al, archsimd.LoadFloat32x8Slice(c[panelW:])).StoreSlice(c[panelW:])
	c2.Add(d2).MulAdd(al, archsimd.LoadFloat32x8Slice(c[2*panelW:])).StoreSlice(c[2*panelW:])
	c3.Add(d3).MulAdd(al, archsimd.LoadFloat32x8Slice(c[3*panelW:])).StoreSlice(c[3*panelW:])
}

// gather1 is gather4 for one panel, into the len(c) ≤ 8 values of c.
func gather1(c, vals []float32, idx []int32, panel []float32, al archsimd.Float32x8) {
	idx = idx[:len(vals)]
	var c0, d0 archsimd.Float32x8
	t := 0
	for ; t+2 <= len(vals); t += 2 {
		o, r := int(idx[t]), int(idx[t+1])
		c0 = archsimd.BroadcastFloat32x8(vals[t]).MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(panel[o:])), c0)
		d0 = archsimd.BroadcastFloat32x8(vals[t+1]).MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(panel[r:])), d0)
	}
	if t < len(vals) {
		o := int(idx[t])
		c0 = archsimd.BroadcastFloat32x8(vals[t]).MulAdd(archsimd.LoadFloat32x8((*[panelW]float32)(panel[o:])), c0)
	}
	c0.Add(d0).MulAdd(al, archsimd.LoadFloat32x8SlicePart(c)).StoreSlicePart(c)
}

// qsums16x4AVX2 is qsums16x4 with VPMADDWD: per pair, two panels' weight
// vectors (16 columns) meet the four rows' broadcast pairs, into eight
// accumulators.
func qsums16x4AVX2(acc []int32, ld int, pv []int32, w16 []int16, kp, panels int) {
	const row = 2 * q16Panel
	stride := kp * row
	pn := 0
	for ; pn+2 <= panels; pn += 2 {
		w0, w1 := w16[pn*stride:(pn+1)*stride], w16[(pn+1)*stride:(pn+2)*stride]
		var c00, c01, c10, c11, c20, c21, c30, c31 archsimd.Int32x8
		x := pv[:4*kp]
		for len(x) >= 4 && len(w0) >= row && len(w1) >= row {
			b0 := archsimd.LoadInt16x16((*[row]int16)(w0))
			b1 := archsimd.LoadInt16x16((*[row]int16)(w1))
			v := archsimd.BroadcastInt32x8(x[0]).AsInt16x16()
			c00 = c00.Add(b0.DotProductPairs(v))
			c01 = c01.Add(b1.DotProductPairs(v))
			v = archsimd.BroadcastInt32x8(x[1]).AsInt16x16()
			c10 = c10.Add(b0.DotProductPairs(v))
			c11 = c11.Add(b1.DotProductPairs(v))
			v = archsimd.BroadcastInt32x8(x[2]).AsInt16x16()
			c20 = c20.Add(b0.DotProductPairs(v))
			c21 = c21.Add(b1.DotProductPairs(v))
			v = archsimd.BroadcastInt32x8(x[3]).AsInt16x16()
			c30 = c30.Add(b0.DotProductPairs(v))
			c31 = c31.Add(b1.DotProductPairs(v))
			x, w0, w1 = x[4:], w0[row:], w1[row:]
		}
		o := pn * q16Panel
		c00.Store((*[q16Panel]int32)(acc[o:]))
		c01.Store((*[q16Panel]int32)(acc[o+q16Panel:]))
		c10.Store((*[q16Panel]int32)(acc[ld+o:]))
		c11.Store((*[q16Panel]int32)(acc[ld+o+q16Panel:]))
		c20.Store((*[q16Panel]int32)(acc[2*ld+o:]))
		c21.Store((*[q16Panel]int32)(acc[2*ld+o+q16Panel:]))
		c30.Store((*[q16Panel]int32)(acc[3*ld+o:]))
		c31.Store((*[q16Panel]int32)(acc[3*ld+o+q16Panel:]))
	}
	if pn < panels {
		w0 := w16[pn*stride : (pn+1)*stride]
		var c0, c1, c2, c3 archsimd.Int32x8
		x := pv[:4*kp]
		for len(x) >= 4 && len(w0) >= row {
			b0 := archsimd.LoadInt16x16((*[row]int16)(w0))
			c0 = c0.Add(b0.DotProductPairs(archsimd.BroadcastInt32x8(x[0]).AsInt16x16()))
			c1 = c1.Add(b0.DotProductPairs(archsimd.BroadcastInt32x8(x[1]).AsInt16x16()))
			c2 = c2.Add(b0.DotProductPairs(archsimd.BroadcastInt32x8(x[2]).AsInt16x16()))
			c3 = c3.Add(b0.DotProductPairs(archsimd.BroadcastInt32x8(x[3]).AsInt16x16()))
			x, w0 = x[4:], w0[row:]
		}
		o := pn * q16Panel
		c0.Store((*[q16Panel]int32)(acc[o:]))
		c1.Store((*[q16Panel]int32)(acc[ld+o:]))
		c2.Store((*[q16Panel]int32)(acc[2*ld+o:]))
		c3.Store((*[q16Panel]int32)(acc[3*ld+o:]))
	}
	archsimd.ClearAVXUpperBits()
}
