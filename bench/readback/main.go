// readback times full read-backs of a mokv store from outside, with Go's grpc (what etcdctl
// is built on): the List stream (one GetResponse per key, as mökv clients read it) and the
// paged Range extension. Built by bench/readback.sh against stubs generated from
// proto/kv.proto; prints one line per run and the median.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "mokvreadback/api"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8400", "a mokv node")
	ca := flag.String("ca", "", "CA certificate (PEM); empty: plaintext")
	cert := flag.String("cert", "", "client certificate (PEM)")
	key := flag.String("key", "", "client key (PEM)")
	serverName := flag.String("server-name", "localhost", "name in the server certificate")
	method := flag.String("method", "stream", "stream (List) or range (Range pages)")
	runs := flag.Int("runs", 2, "read-backs")
	stale := flag.Bool("stale", false, "stale reads")
	flag.Parse()

	opts := []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20))}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			log.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatal(err)
		}
		tc := &tls.Config{RootCAs: roots, ServerName: *serverName, Certificates: []tls.Certificate{pair}}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	} else {
		opts = append(opts, grpc.WithInsecure())
	}
	conn, err := grpc.Dial(*addr, opts...)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	kv := pb.NewKVClient(conn)
	consistency := pb.Consistency_LINEARIZABLE
	if *stale {
		consistency = pb.Consistency_STALE
	}
	var secs []float64
	for r := 0; r < *runs; r++ {
		start := time.Now()
		keys, bytes := 0, 0
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		switch *method {
		case "stream":
			s, err := kv.List(ctx, &pb.ListRequest{Consistency: consistency})
			if err != nil {
				log.Fatal(err)
			}
			for {
				m, err := s.Recv()
				if err == io.EOF {
					break
				}
				if err != nil {
					log.Fatal(err)
				}
				keys++
				bytes += len(m.Key) + len(m.Value)
			}
		case "range":
			next := ""
			for {
				p, err := kv.Range(ctx, &pb.RangeRequest{Start: next, Consistency: consistency})
				if err != nil {
					log.Fatal(err)
				}
				for _, m := range p.Kvs {
					keys++
					bytes += len(m.Key) + len(m.Value)
				}
				if !p.More {
					break
				}
				next = p.NextKey
			}
		default:
			log.Fatalf("unknown -method %q", *method)
		}
		cancel()
		s := time.Since(start).Seconds()
		secs = append(secs, s)
		fmt.Printf("%s run %d: %d keys, %.1f MB in %.3f s = %.0f keys/s\n", *method, r+1, keys, float64(bytes)/1e6, s, float64(keys)/s)
	}
	sort.Float64s(secs)
	m := secs[len(secs)/2]
	if len(secs)%2 == 0 {
		m = (secs[len(secs)/2-1] + secs[len(secs)/2]) / 2
	}
	fmt.Printf("median %s: %.3f s\n", *method, m)
}
