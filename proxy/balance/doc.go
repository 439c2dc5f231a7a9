// Package balance chooses an endpoint for each request (HTTP) or connection
// (TCP).
//
// A Balancer owns a service's endpoints and their live state (requests in
// flight, peak-EWMA latency). On every discovery change it builds a new
// Picker, an immutable snapshot of the endpoint set prepared for one
// algorithm, and swaps it in atomically. Picking therefore takes no lock
// that is shared between requests and allocates nothing; endpoints that
// survive an update keep their state, so an update does not reset what the
// balancer has learnt.
//
// It does not dial, retry or count: callers report what happened through
// Endpoint.Begin, Endpoint.Observe and Endpoint.Done.
package balance
