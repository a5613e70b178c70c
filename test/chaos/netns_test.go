package chaos

// Real kernel links for the partition scenarios.
//
// A netLink is a network namespace of the suite's own (opc-<pid>-<n>)
// joined to the test process's namespace by a veth pair with a private
// /30 (10.231.X.Y). What must sit "across the link" is placed inside the
// namespace:
//
//   - a Kafka broker: the JVM runs under `ip netns exec` and listens only
//     on the namespace's veth address (and its own loopback for the KRaft
//     controller), so the hub's producer reaches it only through the veth;
//   - the hub, for devices: the hub's MQTT listener stays on loopback, and
//     an in-process relay whose listening socket was created inside the
//     namespace (a locked OS thread does setns(2), listen(2), setns back;
//     a socket keeps the namespace it was made in) forwards each
//     connection to it. Devices dial the relay's veth address, so every
//     packet between device and hub crosses the veth.
//
// Cut makes the link drop packets without closing anything: with
// `tc qdisc ... netem loss 100%` where the kernel has sch_netem, else (this
// machine's kernel has no netem) by setting the namespace's end of the pair
// down. The host end then has no carrier but keeps its address and route,
// so nothing is sent anywhere else: established connections see silence
// (no FIN, no RST; what was sent is retransmitted after Heal) and new
// connections fail after the ARP timeout, as with a pulled cable.
//
// Every namespace and link is removed in t.Cleanup, even on failure; ones
// left by a killed earlier run (whose pid is gone) are removed first.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const nsPrefix = "opc-"

// netLink is one namespace and the veth pair that joins it to ours.
type netLink struct {
	NS             string // namespace name
	HostDev, NSDev string
	HostIP, NSIP   string
	netem          bool // cut with netem (else: the namespace's end goes down)
	mu             sync.Mutex
	cut            bool
}

var (
	sweepOnce sync.Once
	linkSeq   int
	linkMu    sync.Mutex
)

// ipCmd runs `ip args...` and fails the test loudly if it cannot.
func ipCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runIP(args...)
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func runIP(args ...string) (string, error) {
	p, err := exec.LookPath("ip")
	if err != nil {
		return "", fmt.Errorf("the partition scenarios need iproute2's `ip` and root (network namespaces, veth pairs): %w", err)
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	return string(out), err
}

// sweepStale removes namespaces named by a run whose process is gone.
func sweepStale(t *testing.T) {
	out := ipCmd(t, "netns", "list")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], nsPrefix) {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(f[0], nsPrefix), "-")
		pid, err := strconv.Atoi(parts[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // still running: another run's
		}
		t.Logf("removing stale namespace %s (pid %d is gone)", f[0], pid)
		_, _ = runIP("netns", "del", f[0]) // its veth end, and so the pair, goes with it
	}
}

// newLink creates a namespace and a veth pair, addressed and up.
func newLink(t *testing.T) *netLink {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("the partition scenarios need root (network namespaces); running as uid %d", os.Geteuid())
	}
	sweepOnce.Do(func() { sweepStale(t) })
	linkMu.Lock()
	linkSeq++
	n := linkSeq
	linkMu.Unlock()
	tag := fmt.Sprintf("%05x%x", os.Getpid()&0xfffff, n&0xf) // 15-byte interface names
	l := &netLink{NS: fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), n), HostDev: "opc" + tag + "h", NSDev: "opc" + tag + "n"}
	// A /30 no interface here uses yet.
	addrs := ipCmd(t, "-o", "-4", "addr", "show")
	for range 100 {
		x, y := rand.IntN(256), rand.IntN(64)*4
		base := fmt.Sprintf("10.231.%d.", x)
		if !strings.Contains(addrs, base+strconv.Itoa(y+1)+"/") && !strings.Contains(addrs, base+strconv.Itoa(y+2)+"/") {
			l.HostIP, l.NSIP = base+strconv.Itoa(y+1), base+strconv.Itoa(y+2)
			break
		}
	}
	if l.HostIP == "" {
		t.Fatal("no free 10.231.x.y/30")
	}
	t.Cleanup(l.remove)
	ipCmd(t, "netns", "add", l.NS)
	ipCmd(t, "link", "add", l.HostDev, "type", "veth", "peer", "name", l.NSDev)
	ipCmd(t, "link", "set", l.NSDev, "netns", l.NS)
	ipCmd(t, "addr", "add", l.HostIP+"/30", "dev", l.HostDev)
	ipCmd(t, "link", "set", l.HostDev, "up")
	ipCmd(t, "-n", l.NS, "addr", "add", l.NSIP+"/30", "dev", l.NSDev)
	ipCmd(t, "-n", l.NS, "link", "set", l.NSDev, "up")
	ipCmd(t, "-n", l.NS, "link", "set", "lo", "up")
	// Is netem there? Try it on the host end, and take it off again.
	if out, err := runTC("qdisc", "add", "dev", l.HostDev, "root", "netem", "loss", "0%"); err == nil {
		l.netem = true
		_, _ = runTC("qdisc", "del", "dev", l.HostDev, "root")
	} else {
		t.Logf("netlink: no netem in this kernel (%s); a cut sets %s down in %s", strings.TrimSpace(out), l.NSDev, l.NS)
	}
	t.Logf("netlink: %s %s/30 <-> %s %s/30 in namespace %s", l.HostDev, l.HostIP, l.NSDev, l.NSIP, l.NS)
	return l
}

func runTC(args ...string) (string, error) {
	p, err := exec.LookPath("tc")
	if err != nil {
		return "", err
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	return string(out), err
}

func (l *netLink) remove() {
	_, _ = runIP("link", "del", l.HostDev)
	_, _ = runIP("netns", "del", l.NS)
}

// Cut makes the link drop every packet, both ways, closing nothing.
func (l *netLink) Cut(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.netem {
		if out, err := runTC("qdisc", "add", "dev", l.HostDev, "root", "netem", "loss", "100%"); err != nil {
			t.Fatalf("tc: %v\n%s", err, out)
		}
		if out, err := runIP("netns", "exec", l.NS, "tc", "qdisc", "add", "dev", l.NSDev, "root", "netem", "loss", "100%"); err != nil {
			t.Fatalf("tc in %s: %v\n%s", l.NS, err, out)
		}
	} else {
		ipCmd(t, "-n", l.NS, "link", "set", l.NSDev, "down")
		// The host end keeps its route (no carrier, still the veth).
		if r := ipCmd(t, "route", "get", l.NSIP); !strings.Contains(r, "dev "+l.HostDev) {
			t.Fatalf("netlink: %s would leave through another interface while cut: %s", l.NSIP, r)
		}
	}
	l.cut = true
}

// Heal carries packets again.
func (l *netLink) Heal(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.cut {
		return
	}
	if l.netem {
		_, _ = runTC("qdisc", "del", "dev", l.HostDev, "root")
		_, _ = runIP("netns", "exec", l.NS, "tc", "qdisc", "del", "dev", l.NSDev, "root")
	} else {
		ipCmd(t, "-n", l.NS, "link", "set", l.NSDev, "up")
	}
	l.cut = false
}

// ListenIn opens a TCP listener on addr inside the namespace.
func (l *netLink) ListenIn(addr string) (net.Listener, error) {
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// This goroutine's thread changes namespace; if it cannot change
		// back it stays locked, and the runtime ends the thread with it.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + l.NS)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: fmt.Errorf("setns %s: %w", l.NS, err)}
			return
		}
		ln, lerr := net.Listen("tcp", addr)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{ln, fmt.Errorf("setns back: %w", err)} // the thread dies locked
			return
		}
		runtime.UnlockOSThread()
		ch <- res{ln, lerr}
	}()
	r := <-ch
	if r.err != nil && r.ln != nil {
		r.ln.Close()
	}
	return r.ln, r.err
}

// Relay forwards each connection accepted on the namespace's veth address
// to upstream (dialled from this namespace, e.g. the hub on loopback) and
// returns the address devices should dial.
func (l *netLink) Relay(t *testing.T, upstream string) string {
	t.Helper()
	ln, err := l.ListenIn(net.JoinHostPort(l.NSIP, "0"))
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				up, err := (&net.Dialer{}).DialContext(ctx, "tcp", upstream)
				cancel()
				if err != nil {
					down.Close()
					return
				}
				track(down, true)
				track(up, true)
				done := make(chan struct{}, 2)
				pipe := func(dst, src net.Conn) {
					_, _ = io.Copy(dst, src)
					done <- struct{}{}
				}
				go pipe(up, down)
				go pipe(down, up)
				<-done // either side ended: end both
				down.Close()
				up.Close()
				<-done
				track(down, false)
				track(up, false)
			}()
		}
	}()
	return ln.Addr().String()
}
