package controller

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/wellknown"
)

// failureHandling is what a Service's timeout, retry, failure-accrual and
// limit annotations ask for, ready to go into its discovery entries.
type failureHandling struct {
	timeouts discovery.Timeouts
	retries  *discovery.Retries
	accrual  *discovery.FailureAccrual
	limits   discovery.Limits
}

// failureAnnotations reads a Service's failure-handling annotations. A bad
// value is reported and that one setting left at its default, so one typo
// neither takes the service out of discovery nor drops its other settings.
func failureAnnotations(ann map[string]string) (failureHandling, []string) {
	var fh failureHandling
	var problems []string
	bad := func(key, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s: %q ", key, ann[key])+fmt.Sprintf(format, args...))
	}
	duration := func(key string) (time.Duration, bool) {
		v, ok := ann[key]
		if !ok {
			return 0, false
		}
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 {
			bad(key, "is not a positive duration such as 500ms or 2s; using the default")
			return 0, false
		}
		return d, true
	}

	if d, ok := duration(wellknown.AnnotationRequestTimeout); ok {
		fh.timeouts.Request = d
	}

	retries := discovery.DefaultRetries()
	anyRetry := false
	var set bool
	if retries.Statuses, set = listAnnotation(ann, wellknown.AnnotationRetryHTTP, "a status (503), a class (5xx) or a range (500-504) within 100-599", discovery.ParseStatusRange, bad); set {
		anyRetry = true
	}
	if retries.GRPCCodes, set = listAnnotation(ann, wellknown.AnnotationRetryGRPC, "a gRPC error code (such as unavailable or 14)", discovery.ParseGRPCCode, bad); set {
		anyRetry = true
	}
	if v, ok := ann[wellknown.AnnotationRetryLimit]; ok {
		anyRetry = true
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err != nil || n < 0 || n > 10 {
			bad(wellknown.AnnotationRetryLimit, "is not a number from 0 to 10; using %d", retries.MaxRetries)
		} else {
			retries.MaxRetries = n
		}
	}
	if v, ok := ann[wellknown.AnnotationRetryBudgetRatio]; ok {
		anyRetry = true
		if r, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil || r < 0 || r > 1 {
			bad(wellknown.AnnotationRetryBudgetRatio, "is not a ratio from 0 to 1; using %v", retries.BudgetRatio)
		} else {
			retries.BudgetRatio = r
		}
	}
	if v, ok := ann[wellknown.AnnotationRetryBudgetMinPerSecond]; ok {
		anyRetry = true
		if r, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil || r < 0 {
			bad(wellknown.AnnotationRetryBudgetMinPerSecond, "is not a number of retries a second, 0 or more; using %v", retries.BudgetMinPerSecond)
		} else {
			retries.BudgetMinPerSecond = r
		}
	}
	if _, ok := ann[wellknown.AnnotationRetryBudgetTTL]; ok {
		anyRetry = true
		if d, ok := duration(wellknown.AnnotationRetryBudgetTTL); ok {
			retries.BudgetTTL = d
		}
	}
	if anyRetry {
		fh.retries = &retries
	}

	accrual := discovery.DefaultFailureAccrual()
	anyAccrual := false
	if v, ok := ann[wellknown.AnnotationFailureAccrual]; ok {
		anyAccrual = true
		switch strings.TrimSpace(v) {
		case "consecutive":
		case "disabled":
			accrual.ConsecutiveFailures = 0
		default:
			bad(wellknown.AnnotationFailureAccrual, "is neither consecutive nor disabled; using consecutive")
		}
	}
	if v, ok := ann[wellknown.AnnotationFailureAccrualMaxFailures]; ok {
		anyAccrual = true
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err != nil || n < 1 {
			bad(wellknown.AnnotationFailureAccrualMaxFailures, "is not a number of failures, 1 or more; using %d", accrual.ConsecutiveFailures)
		} else if accrual.ConsecutiveFailures > 0 {
			accrual.ConsecutiveFailures = n
		}
	}
	if _, ok := ann[wellknown.AnnotationFailureAccrualMinPenalty]; ok {
		anyAccrual = true
		if d, ok := duration(wellknown.AnnotationFailureAccrualMinPenalty); ok {
			accrual.MinBackoff = d
		}
	}
	if _, ok := ann[wellknown.AnnotationFailureAccrualMaxPenalty]; ok {
		anyAccrual = true
		if d, ok := duration(wellknown.AnnotationFailureAccrualMaxPenalty); ok {
			accrual.MaxBackoff = d
		}
	}
	if accrual.MaxBackoff < accrual.MinBackoff {
		problems = append(problems, fmt.Sprintf("%s %s is shorter than %s %s; using %s for both",
			wellknown.AnnotationFailureAccrualMaxPenalty, accrual.MaxBackoff, wellknown.AnnotationFailureAccrualMinPenalty, accrual.MinBackoff, accrual.MinBackoff))
		accrual.MaxBackoff = accrual.MinBackoff
	}
	if v, ok := ann[wellknown.AnnotationFailureAccrualJitterRatio]; ok {
		anyAccrual = true
		if r, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil || r < 0 || r >= 1 {
			bad(wellknown.AnnotationFailureAccrualJitterRatio, "is not a ratio of at least 0 and below 1; using %v", accrual.Jitter)
		} else {
			accrual.Jitter = r
		}
	}
	if anyAccrual {
		fh.accrual = &accrual
	}

	if v, ok := ann[wellknown.AnnotationMaxRequestsPerEndpoint]; ok {
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err != nil || n < 1 {
			bad(wellknown.AnnotationMaxRequestsPerEndpoint, "is not a number of requests, 1 or more; no limit")
		} else {
			fh.limits.MaxRequestsPerEndpoint = n
		}
	}
	return fh, problems
}

// listAnnotation reads a comma-separated annotation with parse, reporting
// each item it refuses (as not what) and keeping the rest; set says
// whether the annotation is there at all.
func listAnnotation[T any](ann map[string]string, key, what string, parse func(string) (T, bool), bad func(key, format string, args ...any)) (items []T, set bool) {
	v, ok := ann[key]
	if !ok {
		return nil, false
	}
	items, refused := discovery.ParseList(v, parse)
	for _, f := range refused {
		bad(key, "has %q, which is not %s; left out", f, what)
	}
	return items, true
}
