// Package httpio is how HTTP gets on and off the proxy's connections where
// net/http's general machinery costs too much on the hot path:
//
//   - h1server.go: an HTTP/1.1 server that serves each connection on the
//     goroutine that accepted it and keeps its buffers, with net/http's
//     parser (and its request-smuggling defences) and the checks net/http's
//     server adds on top;
//   - h1client.go: an HTTP/1.1 client that does each exchange on the
//     caller's goroutine over pooled keep-alive connections;
//   - cork.go: write gathering, so that what one goroutine writes in a turn
//     (an HTTP/2 response's HEADERS and DATA frames) leaves in one write.
//
// It knows nothing of services, balancing or identity: the proxy hands it
// connections and handlers.
package httpio
