package namesapi

import (
	"time"

	"github.com/pc2/pc2/services/dht/records"
)

// Health is GET /api/health.
type Health struct {
	Status  string    `json:"status"`
	Domain  string    `json:"domain"`
	Gateway string    `json:"gateway,omitempty"` // this supernode's DID
	Grants  bool      `json:"grants"`            // this supernode grants names for Domain
	Policy  string    `json:"policy,omitempty"`
	Time    time.Time `json:"time"`
}

// NameInfo is a name's state in API answers.
type NameInfo struct {
	Name     string         `json:"name"`
	DID      string         `json:"did,omitempty"`
	Status   records.Status `json:"status"`
	Seq      uint64         `json:"seq"`
	IssuedAt time.Time      `json:"issued_at"`
	Expires  time.Time      `json:"expires"`
	Operator string         `json:"operator"`
	URL      string         `json:"url,omitempty"`
	// Signer is the supernode that granted it under the operator's
	// delegation ("" when the operator's key signed).
	Signer string `json:"signer,omitempty"`
	// Since is when the holder's holding began.
	Since time.Time `json:"since,omitzero"`
	// RouteUntil is when gateways stop routing the name unless its node
	// renews it (zero: at Expires); Expires is how long it stays
	// reserved to its holder.
	RouteUntil time.Time `json:"route_until,omitzero"`
	// Reason is the operator's, for a revoked name.
	Reason string `json:"reason,omitempty"`
}

// Availability is GET /api/names/{name}/available.
type Availability struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
}

// ClaimRequest is the body of POST /api/names and DELETE /api/names/{name}.
type ClaimRequest struct {
	Claim  records.SignedClaim `json:"claim"`
	Invite string              `json:"invite,omitempty"`
}

// SupernodeList is GET /api/supernodes on a domain's apex: the domain's
// supernodes, as the gateway knows them (its operator's signed domain
// record and itself), then those of the other operators' domains of its
// mesh. A node whose config names no supernode starts from it; it then
// checks what it learned of its own operator against the signed
// records, and uses the others' only when its owner allows.
type SupernodeList struct {
	Domain     string           `json:"domain"`
	Supernodes []SupernodeEntry `json:"supernodes"`
}

// SupernodeEntry is one supernode: its DID and full multiaddrs (with
// /p2p/<peer id>), and the domain (with its operator) whose record lists
// it: the asked domain's, or another operator's of the gateway's mesh.
type SupernodeEntry struct {
	DID      string   `json:"did"`
	Addrs    []string `json:"addrs"`
	Domain   string   `json:"domain,omitempty"`
	Operator string   `json:"operator,omitempty"`
}

// HostRequest is the body of POST /api/hosts: register an owner's own
// domain with the operator whose gateways take them by invite. It
// needs no signature: the proof in the host's DNS (a TXT record at
// _pc2.<host>, signed by the node's key) names the node it is for.
type HostRequest struct {
	Host string `json:"host"`
	// Invite is the operator's code; a host already registered for the
	// same node renews without one.
	Invite string `json:"invite,omitempty"`
}

// HostInfo answers POST /api/hosts: the operator's gateways serve Host
// for DID until Expires unless it is registered again.
type HostInfo struct {
	Host    string    `json:"host"`
	DID     string    `json:"did"`
	Domain  string    `json:"domain"`
	Expires time.Time `json:"expires"`
}
