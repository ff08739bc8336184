// A TCP fault proxy for hack/chaos: it forwards a loopback port to the API
// server, TLS untouched, and on request over a small HTTP control API adds
// latency, resets connections, holds them until the client gives up, or cuts
// long-lived ones (watches) so that the client relists. Standard library only.
//
//	faultproxy -listen 127.0.0.1:P -upstream 127.0.0.1:Q -control 127.0.0.1:C
//
//	POST /latency?ms=N     delay every chunk forwarded by N ms (0: none)
//	POST /reset            reset (RST) every open connection
//	POST /hold?seconds=N   forward nothing for N s, then reset what was held
//	POST /cut?older=N      reset connections open for more than N s
//	GET  /stats            counters, as JSON
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

type connection struct {
	client, server *net.TCPConn
	opened         time.Time
}

// reset closes both sides with SO_LINGER 0, so that each peer sees a reset.
func (c *connection) reset() {
	for _, conn := range []*net.TCPConn{c.client, c.server} {
		_ = conn.SetLinger(0)
		_ = conn.Close()
	}
}

type proxy struct {
	upstream string
	latency  atomic.Int64 // nanoseconds
	mu       sync.Mutex
	open     map[*connection]struct{}
	heldTill time.Time
	stats    struct {
		Accepted, Resets, Holds, Cuts, ConnectionsCut, LatencyChanges atomic.Int64
	}
}

func (p *proxy) heldUntil() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.heldTill
}

// pipe copies one direction, honouring the latency and any hold, until
// either side fails or ends; nil on a clean end of stream.
func (p *proxy) pipe(dst, src *net.TCPConn) error {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for time.Now().Before(p.heldUntil()) {
				time.Sleep(20 * time.Millisecond)
			}
			if delay := time.Duration(p.latency.Load()); delay > 0 {
				time.Sleep(delay)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (p *proxy) serve(client *net.TCPConn) {
	server, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		_ = client.SetLinger(0)
		_ = client.Close()
		return
	}
	c := &connection{client: client, server: server.(*net.TCPConn), opened: time.Now()}
	p.mu.Lock()
	p.open[c] = struct{}{}
	p.mu.Unlock()
	// One side ending ends the connection, both ways, as it would between
	// the two directly: a reset passed on as a reset, an end as an end. A
	// side left open would hang its peer until its own timeout.
	done := make(chan error, 2)
	go func() { done <- p.pipe(c.server, c.client) }()
	go func() { done <- p.pipe(c.client, c.server) }()
	if err := <-done; err != nil {
		c.reset()
	} else {
		_ = c.client.Close()
		_ = c.server.Close()
	}
	<-done
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
}

// resetWhere resets the open connections that match and returns how many.
func (p *proxy) resetWhere(match func(*connection) bool) int {
	p.mu.Lock()
	var chosen []*connection
	for c := range p.open {
		if match(c) {
			chosen = append(chosen, c)
		}
	}
	p.mu.Unlock()
	for _, c := range chosen {
		c.reset()
	}
	return len(chosen)
}

func seconds(r *http.Request, name string) (time.Duration, error) {
	value, err := strconv.ParseFloat(r.URL.Query().Get(name), 64)
	return time.Duration(value * float64(time.Second)), err
}

func (p *proxy) control() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /latency", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil {
			http.Error(w, "ms: "+err.Error(), http.StatusBadRequest)
			return
		}
		p.latency.Store(int64(time.Duration(ms) * time.Millisecond))
		p.stats.LatencyChanges.Add(1)
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
		n := p.resetWhere(func(*connection) bool { return true })
		p.stats.Resets.Add(1)
		json.NewEncoder(w).Encode(map[string]int{"reset": n})
	})
	mux.HandleFunc("POST /hold", func(w http.ResponseWriter, r *http.Request) {
		hold, err := seconds(r, "seconds")
		if err != nil {
			http.Error(w, "seconds: "+err.Error(), http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		p.heldTill = time.Now().Add(hold)
		p.mu.Unlock()
		p.stats.Holds.Add(1)
		// What waited through the hold is reset: to the client, a request
		// that hung until it gave up.
		time.AfterFunc(hold, func() { p.resetWhere(func(*connection) bool { return true }) })
	})
	mux.HandleFunc("POST /cut", func(w http.ResponseWriter, r *http.Request) {
		older, err := seconds(r, "older")
		if err != nil {
			http.Error(w, "older: "+err.Error(), http.StatusBadRequest)
			return
		}
		n := p.resetWhere(func(c *connection) bool { return time.Since(c.opened) > older })
		p.stats.Cuts.Add(1)
		p.stats.ConnectionsCut.Add(int64(n))
		json.NewEncoder(w).Encode(map[string]int{"cut": n})
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		open := len(p.open)
		p.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]int64{
			"accepted": p.stats.Accepted.Load(), "open": int64(open),
			"resets": p.stats.Resets.Load(), "holds": p.stats.Holds.Load(),
			"cuts": p.stats.Cuts.Load(), "connectionsCut": p.stats.ConnectionsCut.Load(),
			"latencyChanges": p.stats.LatencyChanges.Load(),
		})
	})
	return mux
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "where clients connect")
	upstream := flag.String("upstream", "", "the API server's address")
	controlAddr := flag.String("control", "127.0.0.1:0", "the control API's address")
	flag.Parse()
	if *upstream == "" {
		log.Fatal("-upstream is required")
	}
	p := &proxy{upstream: *upstream, open: map[*connection]struct{}{}}
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	controlListener, err := net.Listen("tcp", *controlAddr)
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(http.Serve(controlListener, p.control())) }()
	// One line the harness reads to learn both ports.
	log.Printf("listening on %s, control on %s", listener.Addr(), controlListener.Addr())
	for {
		conn, err := listener.Accept()
		if err != nil {
			log.Fatal(err)
		}
		p.stats.Accepted.Add(1)
		go p.serve(conn.(*net.TCPConn))
	}
}
