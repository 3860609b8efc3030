-- wrk script of the status API benchmark: at the end, one line "BENCH_JSON {...}" with the
-- request count, the duration, the errors and the latency percentiles (microseconds).
done = function(summary, latency, requests)
    local points = {}
    for _, p in ipairs({0.1, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.9, 99.99}) do
        points[#points + 1] = string.format("[%g,%d]", p, latency:percentile(p))
    end
    local e = summary.errors
    io.write(string.format(
        'BENCH_JSON {"requests":%d,"duration_us":%d,"errors":%d,"non_2xx":%d,' ..
        '"max_us":%d,"percentiles":[%s]}\n',
        summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
        latency.max, table.concat(points, ",")))
end
