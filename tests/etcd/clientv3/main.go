// Command clientv3check drives mokv's etcd API with etcd's own Go client (clientv3 3.4, from
// Debian's golang-etcd-server-dev, built in GOPATH mode without a module proxy). It is run by
// tests/etcd/clientv3_test.ts against a real three-node cluster. Modes:
//
//	txn-race   N goroutines increment one counter with compare-and-swap transactions;
//	           prints {"final":F,"succeeded":S}: F must equal S (no lost or double update).
//	watch      watches a prefix from a revision on one endpoint; when that endpoint dies,
//	           resumes on the fallback endpoints from the last revision + 1, as a user would;
//	           prints one JSON line per event ({"rev":R,"key":K}), and "resumed" when it did.
//	get        one linearizable Get; prints {"value":V,"rev":R}.
//	lock       holds concurrency.Mutex -name with a session of -ttl seconds -rounds times,
//	           appending "start PID" and "end PID" to -file around -hold of work each time.
//	campaign   campaigns in concurrency.Election -name with a session of -ttl seconds as
//	           -value; prints "elected" once it leads and stays until killed.
//	watch-bench W watchers on one prefix (over a few connections) while one writer puts at
//	           -rate writes/s for -duration; prints the delivery lag from each write's
//	           acknowledgement to each watcher's event (p50, p99, max; an event that
//	           arrives before its acknowledgement counts 0), the events delivered of those
//	           expected and how many watchers got every event (bench/etcd_watch.sh runs it).
//	lock-bench -workers contenders (a client and a session of -ttl seconds each) loop
//	           concurrency.Mutex Lock -> Unlock on -name, at most -rounds cycles each, for at
//	           most -duration; prints cycles/s and the p50/p99 wait of a Lock
//	           (bench/coordination.ts runs it with --clientv3).
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	"go.etcd.io/etcd/pkg/transport"
	"google.golang.org/grpc/connectivity"
)

var (
	mode      = flag.String("mode", "", "txn-race | watch | get")
	endpoints = flag.String("endpoints", "", "comma-separated host:port")
	fallback  = flag.String("fallback", "", "watch: endpoints to resume on")
	cacert    = flag.String("cacert", "", "CA certificate")
	cert      = flag.String("cert", "", "client certificate")
	key       = flag.String("key", "", "client key")
	prefix    = flag.String("prefix", "w/", "watch: key prefix")
	rev       = flag.Int64("rev", 0, "watch: start revision")
	want      = flag.Int("want", 0, "watch: stop after this many events")
	workers   = flag.Int("workers", 8, "txn-race: goroutines")
	rounds    = flag.Int("rounds", 20, "txn-race: increments per goroutine")
	getKey    = flag.String("key-name", "counter", "get/txn-race: the key")
	timeout   = flag.Duration("timeout", 60*time.Second, "overall deadline")
	watchers  = flag.Int("watchers", 1000, "watch-bench: watchers")
	conns     = flag.Int("conns", 4, "watch-bench: client connections the watchers share")
	rate      = flag.Int("rate", 2000, "watch-bench: writes per second")
	duration  = flag.Duration("duration", 10*time.Second, "watch-bench: how long to write")
	writers   = flag.Int("writers", 32, "watch-bench: concurrent writers the paced producer feeds")
	name      = flag.String("name", "lock", "lock/campaign: the mutex or election name")
	ttl       = flag.Int("ttl", 2, "lock/campaign: session TTL in seconds")
	file      = flag.String("file", "", "lock: the file holders append to")
	hold      = flag.Duration("hold", 200*time.Millisecond, "lock: time in the critical section")
	value     = flag.String("value", "", "campaign: the proposal")
)

func tlsConfig() *tls.Config {
	info := transport.TLSInfo{CertFile: *cert, KeyFile: *key, TrustedCAFile: *cacert}
	c, err := info.ClientConfig()
	if err != nil {
		fail("tls: %v", err)
	}
	return c
}

func client(eps []string) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:            eps,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
		TLS:                  tlsConfig(),
	})
	if err != nil {
		fail("client: %v", err)
	}
	return c
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func emit(v interface{}) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func txnRace(ctx context.Context, c *clientv3.Client) {
	if _, err := c.Put(ctx, *getKey, "0"); err != nil {
		fail("put: %v", err)
	}
	var mu sync.Mutex
	succeeded := 0
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < *rounds; r++ {
				for attempt := 0; attempt < 1000; attempt++ {
					g, err := c.Get(ctx, *getKey)
					if err != nil || len(g.Kvs) != 1 {
						fail("get: %v", err)
					}
					n, _ := strconv.Atoi(string(g.Kvs[0].Value))
					t, err := c.Txn(ctx).
						If(clientv3.Compare(clientv3.ModRevision(*getKey), "=", g.Kvs[0].ModRevision)).
						Then(clientv3.OpPut(*getKey, strconv.Itoa(n+1))).
						Commit()
					if err != nil {
						fail("txn: %v", err)
					}
					if t.Succeeded {
						mu.Lock()
						succeeded++
						mu.Unlock()
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	g, err := c.Get(ctx, *getKey)
	if err != nil {
		fail("get: %v", err)
	}
	final, _ := strconv.Atoi(string(g.Kvs[0].Value))
	emit(map[string]int{"final": final, "succeeded": succeeded})
}

// watchOn follows the prefix from `from` on `c` until `want` events were seen (returns true)
// or the connection is lost (returns false, with the revision to resume from).
func watchOn(ctx context.Context, c *clientv3.Client, from int64, seen *int) (bool, int64) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := c.Watch(wctx, *prefix, clientv3.WithPrefix(), clientv3.WithRev(from))
	next := from
	down := time.Time{}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case resp, ok := <-ch:
			if !ok {
				return false, next
			}
			if err := resp.Err(); err != nil {
				fail("watch: %v", err)
			}
			for _, ev := range resp.Events {
				emit(map[string]interface{}{"rev": ev.Kv.ModRevision, "key": string(ev.Kv.Key)})
				next = ev.Kv.ModRevision + 1
				*seen++
				if *seen >= *want {
					return true, next
				}
			}
		case <-tick.C:
			st := c.ActiveConnection().GetState()
			if st == connectivity.TransientFailure || st == connectivity.Connecting {
				if down.IsZero() {
					down = time.Now()
				} else if time.Since(down) > time.Second {
					return false, next
				}
			} else {
				down = time.Time{}
			}
		case <-ctx.Done():
			fail("watch: timed out after %d events", *seen)
		}
	}
}

func watch(ctx context.Context) {
	seen := 0
	c := client(strings.Split(*endpoints, ","))
	done, next := watchOn(ctx, c, *rev, &seen)
	c.Close()
	if done {
		return
	}
	fmt.Println(`"resumed"`)
	c = client(strings.Split(*fallback, ","))
	defer c.Close()
	if done, _ = watchOn(ctx, c, next, &seen); !done {
		fail("watch: lost the fallback too")
	}
}

func watchBench(ctx context.Context) {
	eps := strings.Split(*endpoints, ",")
	clients := make([]*clientv3.Client, *conns)
	for i := range clients {
		clients[i] = client([]string{eps[i%len(eps)]})
		defer clients[i].Close()
	}
	writer := client(eps[:1])
	defer writer.Close()
	start, err := writer.Get(ctx, "none")
	if err != nil {
		fail("get: %v", err)
	}
	from := start.Header.Revision + 1
	total := int(duration.Seconds() * float64(*rate))
	// Writers record acknowledgements under ackMu; each watcher keeps its own lags and count
	// and merges them under mu when it ends, so watchers never contend per event.
	var ackMu sync.RWMutex
	acked := make(map[string]time.Time, total)
	var mu sync.Mutex
	lags := make([]time.Duration, 0, total**watchers)
	counts := make([]int, *watchers)
	cancelled, firstErr := 0, ""
	var ready, done sync.WaitGroup
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := 0; w < *watchers; w++ {
		ready.Add(1)
		done.Add(1)
		go func(w int) {
			defer done.Done()
			mine := make([]time.Duration, 0, total)
			var failure error
			defer func() {
				mu.Lock()
				lags = append(lags, mine...)
				counts[w] = len(mine)
				if failure != nil {
					if cancelled == 0 {
						firstErr = failure.Error()
					}
					cancelled++
				}
				mu.Unlock()
			}()
			ch := clients[w%len(clients)].Watch(wctx, *prefix, clientv3.WithPrefix(), clientv3.WithRev(from))
			ready.Done()
			for resp := range ch {
				if err := resp.Err(); err != nil {
					failure = err
					return
				}
				now := time.Now()
				ackMu.RLock()
				for _, ev := range resp.Events {
					// An event may arrive before its writer saw the acknowledgement: lag 0.
					lag := time.Duration(0)
					if t, ok := acked[string(ev.Kv.Key)]; ok && now.After(t) {
						lag = now.Sub(t)
					}
					mine = append(mine, lag)
				}
				ackMu.RUnlock()
				if len(mine) >= total {
					return
				}
			}
		}(w)
	}
	ready.Wait()
	interval := time.Second / time.Duration(*rate)
	t0 := time.Now()
	// A paced producer and -writers concurrent writers: one writer cannot reach the rate alone.
	todo := make(chan int, 1024)
	var writing sync.WaitGroup
	for w := 0; w < *writers; w++ {
		writing.Add(1)
		go func() {
			defer writing.Done()
			for i := range todo {
				k := fmt.Sprintf("%s%08d", *prefix, i)
				if _, err := writer.Put(ctx, k, "v"); err != nil {
					fail("put: %v", err)
				}
				ackMu.Lock()
				acked[k] = time.Now()
				ackMu.Unlock()
			}
		}()
	}
	for i := 0; i < total; i++ {
		if d := time.Until(t0.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		todo <- i
	}
	close(todo)
	writing.Wait()
	wrote := time.Since(t0)
	finished := make(chan struct{})
	go func() { done.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
	}
	cancel()
	// Every watcher's channel closes once the context is cancelled; each merges and ends.
	merged := make(chan struct{})
	go func() { done.Wait(); close(merged) }()
	select {
	case <-merged:
	case <-time.After(10 * time.Second):
		fail("watchers did not end within 10 s of the cancel")
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	q := func(p float64) float64 {
		if len(lags) == 0 {
			return 0
		}
		return float64(lags[int(p*float64(len(lags)-1))].Microseconds()) / 1000
	}
	complete := 0
	for _, c := range counts {
		if c >= total {
			complete++
		}
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	emit(map[string]interface{}{
		"client_cpu_s": cpu.Seconds(), "run_s": time.Since(t0).Seconds(),
		"watchers": *watchers, "writes": total, "writes_per_s": float64(total) / wrote.Seconds(),
		"watchers_complete": complete, "events": len(lags), "events_expected": total * *watchers,
		"watchers_cancelled": cancelled, "first_cancel": firstErr, "lag_p50_ms": q(0.5), "lag_p99_ms": q(0.99), "lag_max_ms": q(1),
	})
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fail("open: %v", err)
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		fail("write: %v", err)
	}
	f.Sync()
	f.Close()
}

func lock(ctx context.Context) {
	c := client(strings.Split(*endpoints, ","))
	defer c.Close()
	s, err := concurrency.NewSession(c, concurrency.WithTTL(*ttl))
	if err != nil {
		fail("session: %v", err)
	}
	defer s.Close()
	m := concurrency.NewMutex(s, *name)
	pid := os.Getpid()
	// As an application would: a Lock or Unlock that fails while mokv elects a leader ("no
	// leader", a closing connection) is retried with the same session, which is safe: a lock
	// key this session already created is found again by Lock's compare.
	retry := func(what string, op func() error) {
		var err error
		for attempt := 0; attempt < 100; attempt++ {
			if err = op(); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		fail("%s: %v", what, err)
	}
	for r := 0; r < *rounds; r++ {
		retry("lock", func() error { return m.Lock(ctx) })
		appendLine(*file, fmt.Sprintf("start %d", pid))
		time.Sleep(*hold)
		appendLine(*file, fmt.Sprintf("end %d", pid))
		retry("unlock", func() error { return m.Unlock(ctx) })
	}
	emit(map[string]int{"done": *rounds})
}

func campaign(ctx context.Context) {
	c := client(strings.Split(*endpoints, ","))
	defer c.Close()
	s, err := concurrency.NewSession(c, concurrency.WithTTL(*ttl))
	if err != nil {
		fail("session: %v", err)
	}
	e := concurrency.NewElection(s, *name)
	if err := e.Campaign(ctx, *value); err != nil {
		fail("campaign: %v", err)
	}
	fmt.Println("elected")
	<-ctx.Done()
}

func main() {
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	switch *mode {
	case "txn-race":
		c := client(strings.Split(*endpoints, ","))
		defer c.Close()
		txnRace(ctx, c)
	case "watch":
		watch(ctx)
	case "lock":
		lock(ctx)
	case "campaign":
		campaign(ctx)
	case "watch-bench":
		watchBench(ctx)
	case "lock-bench":
		lockBench(ctx)
	case "get":
		c := client(strings.Split(*endpoints, ","))
		defer c.Close()
		g, err := c.Get(ctx, *getKey)
		if err != nil {
			fail("get: %v", err)
		}
		v := ""
		if len(g.Kvs) == 1 {
			v = string(g.Kvs[0].Value)
		}
		emit(map[string]interface{}{"value": v, "rev": g.Header.Revision})
	default:
		fail("unknown -mode %q", *mode)
	}
}

// lockBench: -workers contenders loop Lock -> Unlock on one Mutex name (see the modes above).
func lockBench(ctx context.Context) {
	eps := strings.Split(*endpoints, ",")
	name := fmt.Sprintf("%s-%d", *name, time.Now().UnixNano())
	sessions := make([]*concurrency.Session, *workers)
	for i := range sessions {
		c := client(eps)
		defer c.Close()
		s, err := concurrency.NewSession(c, concurrency.WithTTL(*ttl))
		if err != nil {
			fail("session: %v", err)
		}
		defer s.Close()
		sessions[i] = s
	}
	var mu sync.Mutex
	var waits []float64
	start := time.Now()
	end := start.Add(*duration)
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Add(1)
		go func(s *concurrency.Session) {
			defer wg.Done()
			m := concurrency.NewMutex(s, name)
			for r := 0; r < *rounds && time.Now().Before(end); r++ {
				asked := time.Now()
				if err := m.Lock(ctx); err != nil {
					fail("lock: %v", err)
				}
				wait := float64(time.Since(asked).Microseconds()) / 1000
				if err := m.Unlock(ctx); err != nil {
					fail("unlock: %v", err)
				}
				mu.Lock()
				waits = append(waits, wait)
				mu.Unlock()
			}
		}(s)
	}
	wg.Wait()
	seconds := time.Since(start).Seconds()
	sort.Float64s(waits)
	pct := func(p float64) float64 {
		if len(waits) == 0 {
			return 0
		}
		i := int(p/100*float64(len(waits))+0.999999) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(waits) {
			i = len(waits) - 1
		}
		return waits[i]
	}
	emit(map[string]interface{}{
		"contenders":   *workers,
		"cycles":       len(waits),
		"seconds":      seconds,
		"cycles_per_s": float64(len(waits)) / seconds,
		"wait_p50_ms":  pct(50),
		"wait_p99_ms":  pct(99),
	})
}
